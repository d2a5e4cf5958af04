"""Nova's compute API over Instances and KubeVirt's VirtualMachines."""
