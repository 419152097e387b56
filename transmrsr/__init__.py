"""TransMRSR: isotropic high-resolution brain MRI from thick-slice scans."""

__version__ = "0.1.0"
