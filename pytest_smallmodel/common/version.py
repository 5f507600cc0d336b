"""The package's version, here rather than in the package root: modules of every layer name it
(fingerprints, the result cache's stamp, the Hugging Face user agent), and importing the root
from below would put it, and what it re-exports, in every chain of imports."""

__version__ = "0.1.0"
