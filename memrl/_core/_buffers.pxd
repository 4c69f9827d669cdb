

cdef inline void* data_pointer(array) except NULL:
    """The data pointer of a C-contiguous, non-empty float32 or float64 array (the typed
    memoryview checks dtype and contiguity; a wrong array raises ValueError)."""
    cdef float[::1] f
    cdef double[::1] d
    flat = array.reshape(-1)
    if flat.shape[0] == 0:
        raise ValueError("expected a non-empty array")
    if array.dtype.itemsize == 8:
        d = flat
        return <void*>&d[0]
    f = flat
    return <void*>&f[0]
