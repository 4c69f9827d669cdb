from cython cimport floating

cdef struct LayerPlan:
    int kind            # 0 dense, 1 GRU
    int in_dim
    int out_dim
    int code            # activation (dense) or gate mode (GRU)
    void* x             # input (T*B, in_dim): the plan's input copy or the previous layer's output
    void* out           # output (T*B, out_dim)
    void* W             # dense W / GRU W_ih
    void* b             # dense b / GRU b_ih
    void* W_hh
    void* b_hh
    void* dW
    void* db
    void* dW_hh
    void* db_hh
    void* pre
    void* y
    void* dpre
    void* dx
    void* h
    void* preact
    void* gates
    void* hn
    void* h_prev
    void* W_hh_T
    void* gh
    void* G
    void* Gh
    void* carry
    void* dhp
    void* dh0
    void* h0
    void* h0_default
    void* h_prev_cont


cdef struct NetPlan:
    LayerPlan* layers
    int n_layers
    int T
    int B
    int in_dim
    int out_dim
    void* x                        # (T*B, in_dim) input copy
    const unsigned char* reset     # (T, B) or NULL, set before each forward


cdef size_t addr(arr) except? 0


cdef class SequencePlan:
    cdef NetPlan net
    cdef bint is_double
    cdef object _keep
    cdef object _keep_h0


cdef class StepPlan:
    cdef NetPlan net
    cdef bint is_double
    cdef object _keep


cdef void plan_forward(NetPlan* plan, floating* dummy=*) noexcept nogil
cdef void plan_backward(NetPlan* plan, floating* dy, bint need_dx, bint ignore_resets,
                        bint param_grads=*) noexcept nogil
cdef void plan_step(NetPlan* plan, floating* x, const unsigned char* reset) noexcept nogil
