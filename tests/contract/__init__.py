"""Contract suites: one per port, written once, subclassed by every backend.

A backend's test module subclasses ``RegistryContract`` (``registry_contract``)
and ``ConfigStoreContract`` (``config_contract``) and implements the
``make_*`` hooks; every ``test_*`` method then runs against that backend.
"""
