"""egresswatch: pipeline/probe."""
