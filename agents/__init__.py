"""egresswatch: agents."""
