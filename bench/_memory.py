"""Peak memory of one training step, alone in a fresh process:
`python _memory.py LIB QUICK THREADS CELL CASE` prints one JSON line.

run.py starts it with MALLOC_MMAP_THRESHOLD_ and MALLOC_TRIM_THRESHOLD_ fixed at 128 KiB,
so that glibc returns large freed blocks (of the set-up, say) to the system at once rather
than keeping them for the step to reuse unseen. The library is first warmed up on a
2-step, batch-2 copy of the case (thread pools, lazy initialisation); then the model, weights and
inputs are built and the peak resident set size is reset by writing 5 to
/proc/self/clear_refs (Linux), which sets VmHWM to the current RSS. One training step
(forward + backward) runs; its figure is VmHWM after the step minus VmHWM after the reset.
Where clear_refs cannot be written, the fallback is getrusage's ru_maxrss (the process's
high-water mark) minus VmRSS before the step, which over-counts when the process peaked
higher before the step than during it.
"""
import dataclasses
import gc
import json
import resource
import sys

import _cases
import _peers


def _status_kb(field):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise KeyError(field)


def _reset_peak():
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def _train_runner(lib, cell, shape, variant, threads):
    x, g, lengths = _cases.make_inputs(shape, variant)
    return _peers.build(lib, cell, shape, _cases.make_weights(cell, shape), x, g, lengths,
                        "train", threads)


def main(lib, quick, threads, cell, name):
    threads = int(threads)
    _peers.configure_threads(threads, [lib])
    case = _cases.CASES[name]
    shape = case.quick if quick == "1" else case.full
    variant = _cases.variants(case)[0]
    _train_runner(lib, cell, dataclasses.replace(shape, T=2, B=2), variant, threads).step()
    runner = _train_runner(lib, cell, shape, variant, threads)
    gc.collect()
    if _reset_peak():
        before_kb = _status_kb("VmHWM")
        runner.step()
        peak_kb, method = _status_kb("VmHWM"), "VmHWM after clear_refs"
    else:
        before_kb = _status_kb("VmRSS")
        runner.step()
        peak_kb, method = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, "ru_maxrss"
    print(json.dumps({"lib": lib, "cell": cell, "case": name, "rss_before_mb": before_kb / 1024,
                      "peak_mb": (peak_kb - before_kb) / 1024, "method": method}))


if __name__ == "__main__":
    main(*sys.argv[1:])
