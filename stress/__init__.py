"""The stress suite: stampedes, the 100-thread check and fault injection (``pytest -n auto stress/``)."""
