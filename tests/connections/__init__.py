"""Connected data stores (issue 18): datasets, traversal, queries and masking on real databases."""
