"""Nova's compute API 2.1 over the Instance, Flavor, KeyPair, ServerGroup and AvailabilityZone objects."""
