"""lmcot: linear mode connectivity of neural networks through optimal transport.

Nothing is imported here, so that importing one module (``lmcot.config``, ``lmcot.sources``) loads only what that
module needs, and a pipeline stage depends only on the files it really imports (see dvc.yaml).
"""

__version__ = "0.1.0"
