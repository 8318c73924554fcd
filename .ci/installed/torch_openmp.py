"""rnnx's wheel (its own thread pool, no OpenMP runtime) and PyTorch (its OpenMP) in one process.

argv[1] is "torch-first" or "rnnx-first", the import order. Both libraries run an LSTM on 2
threads (rnnx's given PyTorch's weights: the outputs must agree), and the OpenMP runtimes
threadpoolctl finds must be PyTorch's alone (none from rnnx's wheel); then the process forks and the child runs an rnnx layer, which must give
the parent's numbers (rnnx puts a forked child on one thread, bitwise the same results),
and PyTorch runs again in the parent. A hang is caught by alarms, not waited out."""
import os
import signal
import sys

order = sys.argv[1]
if order == "torch-first":
    import torch
    import rnnx
elif order == "rnnx-first":
    import rnnx
    import torch
else:
    sys.exit(f"argv[1] must be torch-first or rnnx-first, got {order!r}")
import numpy as np
from threadpoolctl import threadpool_info

signal.alarm(300)
torch.set_num_threads(2)
rnnx.set_num_threads(2)
torch.manual_seed(0)
torch_lstm = torch.nn.LSTM(28, 64, num_layers=2, batch_first=True)
lstm = rnnx.LSTM(28, 64, num_layers=2, batch_first=True)
lstm.load_state_dict({k: v.detach().numpy() for k, v in torch_lstm.state_dict().items()})
x = np.random.default_rng(0).standard_normal((64, 28, 28)).astype(np.float32)
for _ in range(3):
    with torch.no_grad():
        torch_out = torch_lstm(torch.from_numpy(x))[0].numpy()
    out, _ = lstm(x)
    grad_x, _ = lstm.backward(np.ones_like(out), None)
assert np.allclose(out, torch_out, atol=1e-5), np.abs(out - torch_out).max()
assert torch.get_num_threads() == 2 and rnnx.get_num_threads() == 2
openmp = [lib["filepath"] for lib in threadpool_info() if lib["user_api"] == "openmp"]
print(f"{order}: both LSTMs agree on 2 threads each; OpenMP runtimes loaded: {openmp}")
rnnx_dir = os.path.dirname(rnnx.__file__)     # the package, and auditwheel's rnnx.libs/
if any(path.startswith((rnnx_dir + os.sep, rnnx_dir + ".libs" + os.sep)) for path in openmp):
    sys.exit("rnnx's wheel loaded an OpenMP runtime of its own: its kernels use their own threads")

lstm.eval()
parent_out, _ = lstm(x)
pid = os.fork()
if pid == 0:                                    # the child: an rnnx layer, then exit
    signal.alarm(120)
    try:
        child_out, _ = lstm(x)
        gru = rnnx.GRU(28, 32)
        gru(x[:8])
        os._exit(0 if np.array_equal(child_out, parent_out) else 3)
    except BaseException:                       # noqa: BLE001 - reported by the exit code
        os._exit(4)
with torch.no_grad():
    torch_lstm(torch.from_numpy(x))
_, status = os.waitpid(pid, 0)
if not (os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0):
    sys.exit(f"the forked child failed (wait status {status}: 3 = other numbers, 4 = error, "
             f"killed by signal 14 = hung)")
print(f"{order}: a forked child ran rnnx layers with the parent's numbers")
