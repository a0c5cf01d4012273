"""Connected data stores (issue 18): Fides datasets, registered connections, traversal, masking, tasks."""
