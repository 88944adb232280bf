"""egresswatch: tables."""
