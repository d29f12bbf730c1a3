# GPAW build configuration (read by GPAW's setup.py via the GPAW_CONFIG environment variable):
# compile GPAW's C extension with the C++ compiler; no libxc, native BLAS, FFTW or MPI.
compiler = 'g++'
