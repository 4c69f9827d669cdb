from cython cimport floating


cpdef enum LayerKind:
    DENSE = 0
    GRU = 1


cdef struct LayerPlan:
    # Parameters are views into the model's flat buffers; everything else is the plan's workspace.
    LayerKind kind
    int in_dim
    int out_dim
    int code            # activation code (dense) or gate mode (GRU)
    const void* x       # IN  (T*B, in_dim): the network's input (layer 0) or the previous layer's output
    void* out           # OUT (T*B, out_dim): ``y`` (dense) or ``h`` (GRU)
    void* W             # dense W (out, in) / GRU W_ih (3H, in)
    void* b             # dense b (out,) / GRU b_ih (3H,)
    void* W_hh          # GRU (3H, H)
    void* b_hh          # GRU (3H,)
    void* dW            # gradients, same layouts (NULL in a step plan)
    void* db
    void* dW_hh
    void* db_hh
    void* pre           # dense: pre-activations (T*B, out); ``y`` aliases it for the identity
    void* y
    void* dpre
    void* dx            # (T*B, in_dim): gradient w.r.t. this layer's input
    void* h             # GRU: outputs (T*B, H) (a step plan: the carried state (B, H))
    void* preact        # GRU: gate pre-activations (T*B, 3H) (a step plan: x W_ih^T + b_ih (B, 3H))
    void* gates
    void* hn
    void* h_prev
    void* W_hh_T
    void* gh
    void* G
    void* Gh
    void* carry
    void* dhp
    void* dh0           # dL/dh0 (B, H)
    void* h0            # initial state (B, H): ``zeros`` unless set_initial_states gave one
    void* zeros
    void* h_prev_cont   # for the ignore-resets quirk (T*B, H)


cdef struct NetPlan:
    LayerPlan* layers
    int n_layers
    int T
    int B
    int in_dim
    int out_dim
    const unsigned char* reset     # (T, B) or NULL, set before each forward


cdef class SequencePlan:
    cdef NetPlan net
    cdef readonly bint is_double
    cdef object _keep
    cdef object _keep_h0
    cdef object _input
    cdef object _reset
    cdef readonly object output
    cdef readonly object input_grad
    cdef readonly list initial_state_grads


cdef class StepPlan:
    cdef NetPlan net
    cdef readonly bint is_double
    cdef object _keep
    cdef readonly object output


cdef void plan_forward(NetPlan* plan, const floating* x) noexcept nogil
cdef void plan_backward(NetPlan* plan, const floating* dy, bint need_dx, bint ignore_resets,
                        bint param_grads=*) noexcept nogil
cdef void plan_step(NetPlan* plan, const floating* x, const unsigned char* reset) noexcept nogil
