"""Runnable experiments of the thesis "Adaptive and Efficient Neural Architectures".

`python -m thesis.run experiment=<name>` launches one experiment; `thesis.core` holds what every
chapter shares; one subpackage per chapter holds its methods.
"""

__version__ = "0.1.0"
