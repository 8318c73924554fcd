"""Every public entry point fed bad input: a clear ValueError / TypeError / IndexError /
RuntimeError (KeyError for state-dict keys, OSError for files), never a crash or a wrong
result in silence.

Cases that reach the compiled kernels run in a child process (a crash there would kill
pytest); it prints each case's name before running it, so a crash names its case. Inputs
that are legal but hostile (NaN, huge values) must run or raise, never crash.
"""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

import rnnx
from rnnx import nn

F32 = np.float32
TESTS = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(TESTS)
ALLOWED = (ValueError, TypeError, IndexError, RuntimeError, KeyError)

CASES = {}     # name -> (thunk, may_run, risky)


def case(name, thunk, may_run=False, risky=False):
    assert name not in CASES, name
    CASES[name] = (thunk, may_run, risky)


def outcome(name):
    """'ok' if the case ran, the exception's class name if it raised."""
    thunk = CASES[name][0]
    try:
        thunk()
    except Exception as exc:  # noqa: BLE001 - classified by the caller
        return type(exc).__name__, isinstance(exc, ALLOWED) and bool(str(exc))
    return "ok", True


# ---------------------------------------------------------------------------------------
# constructors

BAD_SIZES = {"zero": 0, "negative": -3, "float": 2.5, "str": "3", "none": None, "bool": True,
             "array": np.array([3, 4]), "huge": 2 ** 62}
for kind in ("LSTM", "GRU", "RNN"):
    cls = getattr(rnnx, kind)
    for label, bad in BAD_SIZES.items():
        huge = label == "huge"  # the child runs these under a memory limit
        case(f"{kind}-input_size-{label}", lambda cls=cls, bad=bad: cls(bad, 4), risky=huge)
        case(f"{kind}-hidden_size-{label}", lambda cls=cls, bad=bad: cls(3, bad), risky=huge)
        if label != "bool":
            case(f"{kind}-num_layers-{label}", lambda cls=cls, bad=bad: cls(3, 4, bad),
                 risky=huge)
    case(f"{kind}-num_layers-billion", lambda cls=cls: cls(3, 4, 10 ** 9), risky=True)
    for label, p in {"negative": -0.1, "above-1": 1.5, "nan": float("nan"), "str": "x"}.items():
        case(f"{kind}-dropout-{label}", lambda cls=cls, p=p: cls(3, 4, 2, dropout=p))
    case(f"{kind}-dtype-int", lambda cls=cls: cls(3, 4, dtype=np.int32))
    case(f"{kind}-dtype-float16", lambda cls=cls: cls(3, 4, dtype="float16"))
    case(f"{kind}-dtype-garbage", lambda cls=cls: cls(3, 4, dtype="no such dtype"))
case("LSTM-proj_size-negative", lambda: rnnx.LSTM(3, 4, proj_size=-1))
case("LSTM-proj_size-too-big", lambda: rnnx.LSTM(3, 4, proj_size=4))
case("GRU-proj_size", lambda: rnnx.GRU(3, 4, proj_size=2))
case("RNN-nonlinearity", lambda: rnnx.RNN(3, 4, nonlinearity="sigmoid"))
for kind in ("LSTMCell", "GRUCell", "RNNCell"):
    cls = getattr(rnnx, kind)
    for label in ("zero", "negative", "float", "str", "huge"):
        case(f"{kind}-input_size-{label}", lambda cls=cls, b=BAD_SIZES[label]: cls(b, 4),
             risky=label == "huge")
        case(f"{kind}-hidden_size-{label}", lambda cls=cls, b=BAD_SIZES[label]: cls(3, b),
             risky=label == "huge")
    case(f"{kind}-dtype-int", lambda cls=cls: cls(3, 4, dtype=np.int64))
case("RNNCell-nonlinearity", lambda: rnnx.RNNCell(3, 4, nonlinearity="gelu"))
for label in ("negative", "float", "str", "none", "bool", "huge"):
    case(f"Linear-in-{label}", lambda b=BAD_SIZES[label]: rnnx.Linear(b, 2),
         risky=label == "huge")
    case(f"Linear-out-{label}", lambda b=BAD_SIZES[label]: rnnx.Linear(2, b),
         risky=label == "huge")
case("Linear-dtype", lambda: rnnx.Linear(2, 2, dtype=np.complex64))
for label, p in {"negative": -0.1, "above-1": 1.5, "nan": float("nan"), "str": "x"}.items():
    case(f"Dropout-{label}", lambda p=p: rnnx.Dropout(p))
case("CrossEntropyLoss-reduction", lambda: rnnx.CrossEntropyLoss(reduction="avg"))
case("CrossEntropyLoss-smoothing", lambda: rnnx.CrossEntropyLoss(label_smoothing=1.5))
case("CrossEntropyLoss-weight-2d", lambda: rnnx.CrossEntropyLoss(weight=np.ones((2, 2))))
case("CrossEntropyLoss-weight-int", lambda: rnnx.CrossEntropyLoss(weight=np.ones(2, int)))
case("MSELoss-reduction", lambda: rnnx.MSELoss(reduction=None))
case("Sequential-not-a-module", lambda: rnnx.Sequential(rnnx.Linear(2, 2), np.ones(2)))


# ---------------------------------------------------------------------------------------
# forward with bad input (these reach the kernels: run in the child)

def lstm(**kw):
    rnnx.manual_seed(0)
    return rnnx.LSTM(3, 4, **kw)


BAD_X = {
    "ndim1": np.ones(3, F32), "ndim4": np.ones((2, 2, 2, 3), F32),
    "features": np.ones((2, 2, 5), F32), "int": np.ones((2, 2, 3), np.int32),
    "bool": np.ones((2, 2, 3), bool), "complex": np.ones((2, 2, 3), np.complex64),
    "object": np.array([[[None] * 3] * 2] * 2, object), "str": "abc", "none": None,
    "empty-T": np.ones((0, 2, 3), F32), "empty-B": np.ones((2, 0, 3), F32),
    "ragged": [[[1.0, 2.0, 3.0]], [[1.0, 2.0]]], "scalar": 1.5,
}
for label, x in BAD_X.items():
    case(f"LSTM-forward-{label}", lambda x=x: lstm()(x), risky=True)
    case(f"GRU-bidir-forward-{label}", lambda x=x: rnnx.GRU(3, 4, bidirectional=True)(x),
         risky=True)
x0 = np.ones((2, 2, 3), F32)
BAD_HX = {"ndim2": np.zeros((2, 4), F32), "layers": np.zeros((2, 2, 4), F32),
          "batch": np.zeros((1, 3, 4), F32), "width": np.zeros((1, 2, 5), F32),
          "int": np.zeros((1, 2, 4), int), "str": "h"}
for label, h in BAD_HX.items():
    case(f"LSTM-h0-{label}", lambda h=h: lstm()(x0, (h, np.zeros((1, 2, 4), F32))), risky=True)
    case(f"LSTM-c0-{label}", lambda h=h: lstm()(x0, (np.zeros((1, 2, 4), F32), h)), risky=True)
    case(f"GRU-h0-{label}", lambda h=h: rnnx.GRU(3, 4)(x0, h), risky=True)
case("LSTM-hx-not-tuple", lambda: lstm()(x0, np.zeros((1, 2, 4), F32)), risky=True)
case("LSTM-hx-3-tuple", lambda: lstm()(x0, (None, None, None)), risky=True)
BAD_LENGTHS = {"zero": [2, 0], "too-long": [3, 2], "negative": [-1, 2], "float": [1.5, 2],
               "nan": [float("nan"), 2], "short": [2], "long": [2, 2, 2], "2d": [[2, 2]],
               "str": ["a", "b"], "huge": [2 ** 62, 1], "empty": [], "none-in": [None, 2]}
for label, lengths in BAD_LENGTHS.items():
    case(f"LSTM-lengths-{label}", lambda le=lengths: lstm()(x0, lengths=le), risky=True)
    case(f"pack_padded_sequence-lengths-{label}",
         lambda le=lengths: rnnx.pack_padded_sequence(x0, le, enforce_sorted=False))
BAD_PACKED = {
    "increasing": (np.ones((3, 3), F32), [1, 2]), "zero": (np.ones((2, 3), F32), [2, 0]),
    "rows": (np.ones((5, 3), F32), [2, 2]), "empty": (np.ones((0, 3), F32), []),
    "features": (np.ones((4, 2), F32), [2, 2]), "2d-sizes": (np.ones((4, 3), F32), [[2, 2]]),
    "negative": (np.ones((0, 3), F32), [2, -2]), "int-data": (np.ones((4, 3), int), [2, 2]),
}
for label, (data, bs) in BAD_PACKED.items():
    case(f"LSTM-packed-{label}",
         lambda d=data, b=bs: lstm()(rnnx.PackedSequence(d, np.array(b, int))), risky=True)
for label, idx in {"dup": [0, 0], "range": [0, 2], "float": [0.0, 1.0], "len": [0]}.items():
    case(f"LSTM-packed-sorted-{label}", lambda i=idx: lstm()(
        rnnx.PackedSequence(np.ones((4, 3), F32), [2, 2])._replace(sorted_indices=np.array(i))),
        risky=True)
case("LSTM-packed-and-lengths",
     lambda: lstm()(rnnx.PackedSequence(np.ones((4, 3), F32), [2, 2]), lengths=[2, 2]),
     risky=True)

cell_x = np.ones((2, 3), F32)
for kind in ("LSTMCell", "GRUCell", "RNNCell"):
    for label, x in {"ndim3": np.ones((1, 2, 3), F32), "features": np.ones((2, 4), F32),
                     "empty": np.ones((0, 3), F32), "int": np.ones((2, 3), int),
                     "str": "x", "scalar": 2.0}.items():
        case(f"{kind}-forward-{label}", lambda k=kind, x=x: getattr(rnnx, k)(3, 4)(x),
             risky=True)
    for label, h in {"batch": np.zeros((3, 4), F32), "width": np.zeros((2, 5), F32),
                     "ndim": np.zeros(4, F32), "int": np.zeros((2, 4), int)}.items():
        hx = (h, np.zeros((2, 4), F32)) if kind == "LSTMCell" else h
        case(f"{kind}-hx-{label}", lambda k=kind, hx=hx: getattr(rnnx, k)(3, 4)(cell_x, hx),
             risky=True)
case("LSTMCell-hx-not-tuple", lambda: rnnx.LSTMCell(3, 4)(cell_x, np.zeros((2, 4), F32)),
     risky=True)

for label, x in {"scalar": np.float32(1), "features": np.ones((2, 4), F32),
                 "int": np.ones((2, 3), int), "str": "x", "none": None}.items():
    case(f"Linear-forward-{label}", lambda x=x: rnnx.Linear(3, 2)(x))
    case(f"Sequential-forward-{label}",
         lambda x=x: rnnx.Sequential(rnnx.Linear(3, 2), rnnx.Linear(2, 1))(x))
case("Dropout-forward-int", lambda: rnnx.Dropout(0.5)(np.ones(3, int)))
case("CrossEntropyLoss-target-range", lambda: rnnx.CrossEntropyLoss()(np.zeros((2, 3)), [0, 3]))
case("CrossEntropyLoss-target-negative",
     lambda: rnnx.CrossEntropyLoss()(np.zeros((2, 3)), [0, -2]))
case("CrossEntropyLoss-target-shape", lambda: rnnx.CrossEntropyLoss()(np.zeros((2, 3)), [0]))
case("CrossEntropyLoss-target-float-shape",
     lambda: rnnx.CrossEntropyLoss()(np.zeros((2, 3)), np.zeros((2, 2))))
case("CrossEntropyLoss-scalar", lambda: rnnx.CrossEntropyLoss()(np.float32(1), 0))
case("CrossEntropyLoss-target-str", lambda: rnnx.CrossEntropyLoss()(np.zeros((2, 3)), "ab"))
case("MSELoss-shapes", lambda: rnnx.MSELoss()(np.zeros((2, 3)), np.zeros((3, 2))))
case("MSELoss-int", lambda: rnnx.MSELoss()(np.zeros(3, int), np.zeros(3, int)))
case("LastHidden-not-tuple", lambda: rnnx.LastHidden()(np.zeros((1, 2, 3))))
case("LastHidden-ndim", lambda: rnnx.LastHidden()((None, np.zeros(3))))
case("LastHidden-odd-bidir", lambda: rnnx.LastHidden(True)((None, np.zeros((3, 2, 3)))))
case("LastTimeStep-ndim", lambda: rnnx.LastTimeStep()((np.zeros(3), None)))
case("LastTimeStep-3-tuple", lambda: rnnx.LastTimeStep()((np.zeros((2, 2, 3)), None, None)))
for pool in ("LastTimeStep", "MeanOverTime", "MaxOverTime"):
    case(f"{pool}-int", lambda p=pool: getattr(rnnx, p)()(np.zeros((2, 2, 3), int)))
    case(f"{pool}-lengths-range",
         lambda p=pool: getattr(rnnx, p)()(np.zeros((2, 2, 3), F32), lengths=[3, 1]))
    case(f"{pool}-lengths-shape",
         lambda p=pool: getattr(rnnx, p)()(np.zeros((2, 2, 3), F32), lengths=[1]))
    case(f"{pool}-no-steps", lambda p=pool: getattr(rnnx, p)()(np.zeros((0, 2, 3), F32)))

# legal but hostile values: run (NaN/inf propagate as in torch) or raise, never crash
for label, value in {"nan": np.nan, "inf": np.inf, "huge": 3e38, "tiny": 1e-45}.items():
    for kind in ("LSTM", "GRU", "RNN"):
        def run(kind=kind, value=value):
            m = getattr(rnnx, kind)(3, 4, num_layers=2, bidirectional=True)
            out, _ = m(np.full((3, 2, 3), value, F32), lengths=[3, 1])
            m.backward(np.full_like(out, value))
        case(f"{kind}-values-{label}", run, may_run=True, risky=True)
    case(f"LSTMCell-values-{label}",
         lambda v=value: rnnx.LSTMCell(3, 4)(np.full((2, 3), v, F32)), may_run=True, risky=True)


# ---------------------------------------------------------------------------------------
# backward with bad gradients

def after_forward(make, x, *forward_args):
    m = make()
    m(x, *forward_args)
    return m


BAD_GRAD = {"shape": np.ones((2, 2, 5), F32), "ndim": np.ones((2, 4), F32),
            "int": np.ones((2, 2, 4), int), "str": "g", "list-ragged": [[1.0], [1.0, 2.0]],
            "complex": np.ones((2, 2, 4), complex)}
for label, g in BAD_GRAD.items():
    case(f"LSTM-backward-{label}", lambda g=g: after_forward(lstm, x0).backward(g), risky=True)
    case(f"GRU-backward-{label}",
         lambda g=g: after_forward(lambda: rnnx.GRU(3, 4), x0).backward(g), risky=True)
    case(f"LSTM-backward-grad_h_n-{label}",
         lambda g=g: after_forward(lstm, x0).backward(None, (g, None)), risky=True)
    if label == "ndim":
        g = np.ones(4, F32)  # a cell's output is (B, H): (2, 4) is a good gradient
    case(f"LSTMCell-backward-{label}", lambda g=g: after_forward(
        lambda: rnnx.LSTMCell(3, 4), cell_x).backward((g, None)), risky=True)
    case(f"GRUCell-backward-{label}", lambda g=g: after_forward(
        lambda: rnnx.GRUCell(3, 4), cell_x).backward(g), risky=True)
    case(f"Linear-backward-{label}", lambda g=g: after_forward(
        lambda: rnnx.Linear(3, 4), np.ones((2, 2, 3), F32)).backward(g))
case("LSTM-backward-without-forward", lambda: lstm().backward(None), risky=True)
case("LSTM-backward-hx-not-tuple",
     lambda: after_forward(lstm, x0).backward(None, np.zeros((1, 2, 4), F32)), risky=True)
case("LSTMCell-backward-not-tuple",
     lambda: after_forward(lambda: rnnx.LSTMCell(3, 4), cell_x).backward(np.ones((2, 4))),
     risky=True)
case("Linear-backward-without-forward", lambda: rnnx.Linear(3, 4).backward(np.ones((2, 4))))
case("MSELoss-backward-shape", lambda: after_forward(
    lambda: rnnx.MSELoss(reduction="none"), np.ones(3), np.ones(3)).backward(np.ones(2)))
case("Sequential-backward-without-forward",
     lambda: rnnx.Sequential(rnnx.Linear(3, 4)).backward(np.ones((2, 4))))


def with_grad(make, x, name, grad):
    def run():
        m = after_forward(make, x)
        getattr(m, name).grad = grad
        m.backward(None) if not isinstance(m, rnnx.Linear) else m.backward(np.ones((2, 4)))
    return run


for label, g in {"read-only": np.zeros((16, 3), F32), "shape": np.zeros((3, 16), F32),
                 "dtype": np.zeros((16, 3)), "strided": np.zeros((32, 3), F32)[::2],
                 "list": [[0.0] * 3] * 16}.items():
    if label == "read-only":
        g.setflags(write=False)
    case(f"LSTM-grad-array-{label}", with_grad(lstm, x0, "weight_ih_l0", g), risky=True)
    case(f"LSTMCell-grad-array-{label}",
         with_grad(lambda: rnnx.LSTMCell(3, 4), cell_x, "weight_ih", g), risky=True)


def with_data(make, x, name, data):
    def run():
        m = make()
        getattr(m, name).data = data
        m(x)
    return run


for label, d in {"transposed": np.zeros((3, 16), F32), "long": np.zeros((17, 3), F32),
                 "dtype": np.zeros((16, 3)), "list": [[0.0] * 3] * 16, "none": None,
                 "strided": np.zeros((32, 3), F32)[::2]}.items():
    strided = label == "strided"  # copied into C order, as PyTorch accepts it
    case(f"LSTM-data-{label}", with_data(lstm, x0, "weight_ih_l0", d), may_run=strided,
         risky=True)
    case(f"GRUCell-data-{label}",
         with_data(lambda: rnnx.GRUCell(3, 4), cell_x, "weight_ih", np.asarray(d)[:12]
                   if isinstance(d, np.ndarray) and label != "long" else d), may_run=strided,
         risky=True)


# ---------------------------------------------------------------------------------------
# state dicts, files, utilities, optimizers

def state_with(**changes):
    state = lstm().state_dict()
    state.update(changes)
    return state


for label, value in {"shape": np.zeros((3, 16)), "complex": np.zeros((16, 3), complex),
                     "str": np.array([["a"] * 3] * 16), "none": None, "object": object(),
                     "scalar": 1.0}.items():
    case(f"load_state_dict-{label}",
         lambda v=value: lstm().load_state_dict(state_with(weight_ih_l0=v)))
case("load_state_dict-missing", lambda: lstm().load_state_dict({}))
case("load_state_dict-unexpected", lambda: lstm().load_state_dict(state_with(extra=np.ones(1))))
case("load_state_dict-not-a-dict", lambda: lstm().load_state_dict([1, 2, 3]))

case("save-object", lambda: rnnx.save(object(), os.devnull))
case("save-object-array", lambda: rnnx.save({"a": np.array([None])}, os.devnull))
case("save-bad-key", lambda: rnnx.save({(1, 2): 1}, os.devnull))
case("save-path-none", lambda: rnnx.save({}, None))
case("load-path-int-list", lambda: rnnx.load([1]))


def load_bytes(data):
    def run():
        import tempfile
        with tempfile.TemporaryDirectory() as d:
            path = os.path.join(d, "f.npz")
            with open(path, "wb") as f:
                f.write(data)
            rnnx.load(path)
    return run


case("load-garbage", load_bytes(b"not a checkpoint at all"))
case("load-empty", load_bytes(b""))
case("load-truncated-zip", load_bytes(b"PK\x03\x04" + b"\x00" * 40))

for label, seqs in {"empty": [], "trailing": [np.ones((2, 3)), np.ones((2, 4))],
                    "scalars": [np.float32(1)]}.items():
    case(f"pack_sequence-{label}", lambda s=seqs: rnnx.pack_sequence(s, enforce_sorted=False))
    case(f"pad_sequence-{label}", lambda s=seqs: rnnx.pad_sequence(s))
case("pad_sequence-side", lambda: rnnx.pad_sequence([np.ones(2)], padding_side="middle"))
case("pack_padded_sequence-ndim", lambda: rnnx.pack_padded_sequence(np.ones(3), [1]))
case("pack_padded_sequence-unsorted",
     lambda: rnnx.pack_padded_sequence(x0, [1, 2], enforce_sorted=True))
case("pad_packed_sequence-not-packed", lambda: rnnx.pad_packed_sequence(np.ones((2, 3))))
case("pad_packed_sequence-total_length", lambda: rnnx.pad_packed_sequence(
    rnnx.pack_padded_sequence(x0, [2, 1]), total_length=1))
for label, (data, bs) in BAD_PACKED.items():
    if label in ("features", "int-data"):
        continue  # any trailing shape and dtype can be padded
    case(f"pad_packed_sequence-{label}",
         lambda d=data, b=bs: rnnx.pad_packed_sequence(rnnx.PackedSequence(d, np.array(b, int))))

for label, n in {"zero": 0, "negative": -1, "float": 2.0, "nan": float("nan"), "bool": True,
                 "str": "2", "none": None, "huge": 2 ** 31, "huger": 10 ** 6}.items():
    case(f"set_num_threads-{label}", lambda n=n: rnnx.set_num_threads(n))

params = lambda: lstm().parameters()  # noqa: E731
for label, kw in {"lr-negative": dict(lr=-1), "lr-str": dict(lr="a"),
                  "momentum": dict(momentum=-0.5),
                  "weight_decay": dict(weight_decay=-1), "nesterov": dict(nesterov=True),
                  "nesterov-dampening": dict(nesterov=True, momentum=0.9, dampening=0.1)}.items():
    case(f"SGD-{label}", lambda kw=kw: rnnx.SGD(params(), **kw))
case("SGD-empty", lambda: rnnx.SGD([], lr=0.1))
case("SGD-a-parameter", lambda: rnnx.SGD(lstm().weight_ih_l0, lr=0.1))
case("SGD-a-module", lambda: rnnx.SGD(lstm(), lr=0.1))
case("SGD-arrays", lambda: rnnx.SGD([np.ones(3)], lr=0.1))
case("SGD-group-not-dict", lambda: rnnx.SGD([lstm().parameters(), 3], lr=0.1))
def overlapping_groups():
    ps = params()
    return [{"params": ps[:1]}, {"params": ps[:2]}]


case("SGD-duplicate", lambda: rnnx.SGD(overlapping_groups(), lr=0.1))
# as torch's: accepted (the lr is the caller's business; a set of parameters is a list here)
case("SGD-lr-nan", lambda: rnnx.SGD(params(), lr=float("nan")), may_run=True)
case("SGD-set", lambda: rnnx.SGD(set(params()), lr=0.1), may_run=True)
case("StepLR-not-optimizer", lambda: rnnx.optim.lr_scheduler.StepLR(object(), 1))
case("ReduceLROnPlateau-factor",
     lambda: rnnx.optim.lr_scheduler.ReduceLROnPlateau(rnnx.SGD(params(), lr=0.1), factor=2.0))
case("ReduceLROnPlateau-mode",
     lambda: rnnx.optim.lr_scheduler.ReduceLROnPlateau(rnnx.SGD(params(), lr=0.1), mode="up"))
def nonfinite_grad():
    p = nn.Parameter(np.zeros(3))
    p.grad[...] = np.inf
    return [p]


case("clip_grad_norm-nonfinite",
     lambda: rnnx.clip_grad_norm_(nonfinite_grad(), 1.0, error_if_nonfinite=True))
case("clip_grad_norm-norm-type", lambda: rnnx.clip_grad_norm_(params(), 1.0, norm_type="two"))
case("clip_grad_value-str", lambda: rnnx.clip_grad_value_(params(), "big"))


# ---------------------------------------------------------------------------------------
# the tests

SAFE = sorted(name for name, (_, _, risky) in CASES.items() if not risky)
RISKY = sorted(name for name, (_, _, risky) in CASES.items() if risky)


@pytest.mark.parametrize("name", SAFE)
def test_bad_input_raises_a_clear_error(name):
    saved = rnnx.get_num_threads()
    kind, clear = outcome(name)
    rnnx.set_num_threads(saved)
    may_run = CASES[name][1]
    assert clear and (kind != "ok" or may_run), f"{name}: {kind}"


def test_bad_input_to_the_kernels_raises_a_clear_error_in_a_child_process():
    """RISKY cases in one child, its address space limited to 4 GiB (a runaway allocation
    fails there instead of exhausting the machine): each prints its name before it runs,
    then its outcome."""
    code = ("import json, resource, test_fuzz\n"
            "resource.setrlimit(resource.RLIMIT_AS, (4 << 30, resource.getrlimit("
            "resource.RLIMIT_AS)[1]))\n"
            "for name in test_fuzz.RISKY:\n"
            "    print('RUN', name, flush=True)\n"
            "    print('OUT', json.dumps([name, *test_fuzz.outcome(name)]), flush=True)\n")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([REPO, TESTS]))
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                          timeout=300, cwd=TESTS)
    lines = proc.stdout.splitlines()
    last = next((line for line in reversed(lines) if line.startswith("RUN")), "RUN ?")
    assert proc.returncode == 0, (f"child died ({proc.returncode}) in {last[4:]}: "
                                  f"{proc.stderr[-2000:]}")
    results = [json.loads(line[4:]) for line in lines if line.startswith("OUT")]
    assert [r[0] for r in results] == RISKY
    bad = [(name, kind) for name, kind, clear in results
           if not clear or (kind == "ok" and not CASES[name][1])]
    assert not bad, bad


def test_case_table_covers_the_public_api():
    """Every public entry point of rnnx (module classes, functions) appears in some case."""
    names = " ".join(CASES)
    public = ["LSTM", "GRU", "RNN", "LSTMCell", "GRUCell", "RNNCell", "Linear", "Dropout",
              "CrossEntropyLoss", "MSELoss", "Sequential", "LastHidden", "LastTimeStep",
              "MeanOverTime", "MaxOverTime", "load_state_dict", "save", "load",
              "pack_sequence", "pad_sequence", "pack_padded_sequence", "pad_packed_sequence", "set_num_threads", "SGD",
              "StepLR", "ReduceLROnPlateau", "clip_grad_norm", "clip_grad_value"]
    assert [p for p in public if p not in names] == []
