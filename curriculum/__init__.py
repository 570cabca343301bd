"""dl-curriculum: project definitions, models and helpers shared by the pipeline stages."""
