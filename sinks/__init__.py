"""egresswatch: sinks."""
