"""egresswatch: pipeline."""
