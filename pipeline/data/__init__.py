"""Storage -> prepared data: input discovery and schema, preparation, splits, label statistics, label sets
and groups, the synthetic corpus."""
