"""facefactors: learn, measure, compose and edit disentangled face representations."""

from facefactors.utils.allocator import tune_cpu_allocator

__version__ = "0.1.0"

# Large CPU tensors are recycled from the heap instead of mmap'd afresh on every call (about 2x
# on the z-buffer); FACEFACTORS_MALLOC=0 opts out. See utils/allocator.py.
tune_cpu_allocator()
