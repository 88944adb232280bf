"""egresswatch: api."""
