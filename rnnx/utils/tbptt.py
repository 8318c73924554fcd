"""Truncated back-propagation through time (TBPTT) for long sequences.

The pattern: split the sequence into chunks along time; run each chunk from the previous
chunk's final state; back-propagate within the chunk only, i.e. call backward with a zero
(None) gradient for the chunk's final state, so nothing flows into earlier chunks; step the
optimizer per chunk (or accumulate). In rnnx states are plain arrays, so carrying the state
*is* detaching it: the next forward starts from its values and records nothing about how
they were computed.

    state = None
    for chunk, target in zip(time_chunks(x, 50), time_chunks(y, 50)):
        out, state = lstm(chunk, state)
        loss = loss_fn(head(out), target)
        optimizer.zero_grad()
        lstm.backward(head.backward(loss_fn.backward()), None)
        optimizer.step()
"""


def time_chunks(x, chunk_len, batch_first=False):
    """Consecutive views of x with chunk_len time steps each (the last may be shorter).

    x: (T, ...) time-major, or (B, T, ...) when batch_first.
    """
    if isinstance(chunk_len, bool) or not isinstance(chunk_len, int) or chunk_len < 1:
        raise ValueError(f"chunk_len must be a positive int, got {chunk_len!r}")
    axis = 1 if batch_first else 0
    T = x.shape[axis]
    for start in range(0, T, chunk_len):
        yield x[:, start:start + chunk_len] if batch_first else x[start:start + chunk_len]
