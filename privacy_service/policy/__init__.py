"""Policy as code: the files in ``policies/`` drive both the published notice and the behaviour."""
