# The kernels of _recurrent.pyx built for one instruction-set level (setup.py's LEVELS);
# rnnx._kernels.recurrent imports the best one the CPU runs.
include "_recurrent.pyx"
