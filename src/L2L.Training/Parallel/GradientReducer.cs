// The data-parallel side of the param server: per-device gradient staging, device-order sums, cross-rank collectives on one thread.
using System.Collections.Concurrent;
using System.Diagnostics;
using L2L.Backends;
using L2L.Model;
using L2L.Training.Distributed;

namespace L2L.Training.Parallel;

/// <summary>
/// Collects every replica's gradients of a layer, sums them in device order (<see cref="OrderedSum"/>), reduces the sum
/// across ranks and runs the layer's update once. Each replica copies a layer's gradients into its own pinned staging
/// (a ring of block-sized slots, and a buffer of its own for a longer layer). When the last replica's gradients of a
/// layer have landed, the layer is queued to one collective thread, which handles layers in the order they complete,
/// the same order on every rank (the relay's: head, top block … block 0, embedding), one collective at a time. Without
/// sharding the sum is all-reduced and the update runs on a pool thread while the thread goes on with the next layer;
/// with sharding the sum is reduce-scattered, this rank's shard updated and the weights all-gathered, all on the thread.
/// A layer's next fetch waits for its update.
/// </summary>
/// <remarks>
/// At a 16-bit precision each replica stages its 16-bit gradients (half the host bytes), and the device-order sum
/// widens them to FP32 first, into an FP32 sum buffer per layer in flight (a ring like a replica's, indexed by replica
/// 0's slot): element by element <c>((w(g₀) + w(g₁)) + w(g₂)) + …</c>, the bits <see cref="OrderedSum"/> gives on the
/// widened gradients. Everything after the sum (the cross-rank all-reduce, the norms, the update) is the FP32 path.
/// </remarks>
internal sealed unsafe class GradientReducer : IDisposable
{
    /// <summary>Updates elements [lo, hi) of a layer from gradients of that range, first multiplied by <paramref name="factor"/> unless 1 (the server's optimizer).</summary>
    internal delegate void LayerUpdate(int layer, long step, long optimizerStep, float factor, Span<float> grads, long lo, long hi);

    private readonly ParallelSetup _setup;
    private readonly ModelLayout _layout;
    private readonly LayerUpdate _update;
    private readonly Func<int, PinnedHostBuffer<float>> _weights;
    private readonly int _threads;
    private readonly Staging[] _replicas;
    private readonly object _gate = new();
    private readonly int[] _arrivals;
    private readonly Task[] _done, _reduced;
    private readonly BlockingCollection<Action> _jobs = new();
    private readonly Thread _thread;
    private readonly PinnedHostBuffer<float>? _shard, _gather;
    private readonly Precision _precision;
    private readonly Staging? _sums; // 16-bit precision: the FP32 sums of the replicas' widened gradients
    private readonly double[] _sumSquares;
    private long _collectiveTicks;
    private volatile Exception? _failure;

    public GradientReducer(ParallelSetup setup, ModelLayout layout, int gradientSlots, int threads, LayerUpdate update, Func<int, PinnedHostBuffer<float>> weights,
        bool deferred = false, Precision precision = Precision.Fp32)
    {
        if (precision.Is16Bit() && setup.ShardOptimizer)
            throw new ArgumentException($"--precision {precision.Name()} with --shard-optimizer is not implemented: use --precision fp32, or leave --shard-optimizer off.");
        _precision = precision;
        _setup = setup;
        _layout = layout;
        _update = update;
        _weights = weights;
        _threads = threads;
        var count = layout.Layers.Count;
        _arrivals = new int[count];
        _sumSquares = new double[count];
        _done = Enumerable.Repeat(Task.CompletedTask, count).ToArray();
        _reduced = Enumerable.Repeat(Task.CompletedTask, count).ToArray();
        var r = setup.WorldSize;
        // Sharding reduce-scatters a layer from its staging buffer, so each is padded to R whole shards.
        long Staged(long n) => setup.ShardOptimizer ? r * ShardLayout.ShardLength(n, r) : n;
        // Deferred updates keep every layer's gradients until the step's norm is known: a buffer per layer, no ring.
        var slotLength = deferred ? 0 : layout.Blocks.Select(b => Staged(b.Length)).DefaultIfEmpty(0).Max();
        _replicas = new Staging[setup.DeviceCount];
        try
        {
            for (var d = 0; d < _replicas.Length; d++)
                _replicas[d] = new Staging(setup.Devices[d], layout, slotLength, gradientSlots, Staged, precision);
            if (precision.Is16Bit())
                _sums = new Staging(setup.Devices[0], layout, slotLength, gradientSlots, Staged, Precision.Fp32);
            if (setup.ShardOptimizer)
            {
                var longest = layout.Layers.Max(l => ShardLayout.ShardLength(l.Length, r));
                _shard = setup.Devices[0].AllocatePinned<float>(longest);
                _gather = setup.Devices[0].AllocatePinned<float>(r * longest);
            }
        }
        catch
        {
            foreach (var s in _replicas) s?.Dispose();
            _sums?.Dispose();
            _shard?.Dispose();
            throw;
        }
        HostBytes = _replicas.Sum(s => s.Bytes) + (_sums?.Bytes ?? 0) + sizeof(float) * ((_shard?.Length ?? 0) + (_gather?.Length ?? 0));
        _thread = new Thread(Run) { IsBackground = true, Name = "l2l-collectives" };
        _thread.Start();
    }

    /// <summary>
    /// Per-layer clipping: the factor for a layer's reduced gradients from their sum of squares (over every device and
    /// rank); null: no clipping.
    /// </summary>
    public Func<float, float>? LayerClip { get; set; }

    /// <summary>
    /// Deferred updates (global clipping): the step's gradient factor from every layer's sum of squares of its reduced
    /// gradients (indexed by layer; 0 for layers without gradients this step).
    /// </summary>
    public Func<float[], float>? GlobalFactor { get; set; }

    /// <summary>Pinned host bytes of the staging buffers and the shard scratch.</summary>
    public long HostBytes { get; }

    /// <summary>Seconds spent inside cross-rank collectives so far.</summary>
    public double CollectiveSeconds => TimeSpan.FromTicks(Interlocked.Read(ref _collectiveTicks)).TotalSeconds;

    private int R => _setup.WorldSize;

    /// <summary>A pinned FP32 buffer for replica <paramref name="replica"/>'s gradients of <paramref name="layer"/>, once one is free (fp32 only).</summary>
    public PinnedHostBuffer<float> Stage(int replica, int layer)
    {
        var slot = Acquire(replica, layer);
        var staging = _replicas[replica];
        return slot < 0 ? staging.Own[layer]! : staging.Slots[slot];
    }

    /// <summary>A pinned 16-bit buffer for replica <paramref name="replica"/>'s gradients of <paramref name="layer"/>, once one is free (16-bit precision only).</summary>
    public PinnedHostBuffer<ushort> Stage16(int replica, int layer)
    {
        var slot = Acquire(replica, layer);
        var staging = _replicas[replica];
        return slot < 0 ? staging.Own16[layer]! : staging.Slots16[slot];
    }

    /// <summary>Takes a staging slot of <paramref name="replica"/> for <paramref name="layer"/> (waiting for one), or -1 for a layer with its own buffer.</summary>
    private int Acquire(int replica, int layer)
    {
        // The previous step's update of this layer may still read replica 0's buffer.
        _done[layer].GetAwaiter().GetResult();
        var staging = _replicas[replica];
        lock (_gate)
        {
            if (staging.HasOwn(layer))
                return -1;
            while (true)
            {
                if (_failure is { } failure)
                    throw new InvalidOperationException("Another device's replica failed; this step cannot complete.", failure);
                var free = Array.IndexOf(staging.SlotOwner, -1);
                if (free >= 0)
                {
                    staging.SlotOwner[free] = layer;
                    staging.SlotOfLayer[layer] = free;
                    return free;
                }
                Monitor.Wait(_gate);
            }
        }
    }

    /// <summary>
    /// Records that replica <paramref name="replica"/>'s gradients of <paramref name="layer"/> have landed; the last of the
    /// replicas queues the layer's reduction and update.
    /// </summary>
    public void Arrive(int replica, int layer, long step, long optimizerStep)
    {
        lock (_gate)
        {
            if (_failure is { } failure)
                throw new InvalidOperationException("Another device's replica failed; this step cannot complete.", failure);
            if (++_arrivals[layer] < _replicas.Length)
                return;
            _arrivals[layer] = 0;
            var done = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
            var reduced = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
            _done[layer] = done.Task;
            _reduced[layer] = reduced.Task;
            _jobs.Add(() => Reduce(layer, step, optimizerStep, done, reduced));
        }
    }

    /// <summary>
    /// Deferred updates: replica <paramref name="replica"/>'s gradients of every layer in <paramref name="layers"/>
    /// (forward order) have landed. The last replica queues one job that reduces them all in that order, takes the
    /// step's factor from their norms (<see cref="GlobalFactor"/>), then updates them in that order.
    /// </summary>
    public void ArriveAll(int replica, IReadOnlyList<int> layers, long step, long[] optimizerSteps)
    {
        lock (_gate)
        {
            if (_failure is { } failure)
                throw new InvalidOperationException("Another device's replica failed; this step cannot complete.", failure);
            if (++_allArrivals < _replicas.Length)
                return;
            _allArrivals = 0;
            var done = new TaskCompletionSource[layers.Count];
            var reduced = new TaskCompletionSource[layers.Count];
            for (var k = 0; k < layers.Count; k++)
            {
                done[k] = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
                reduced[k] = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
                _done[layers[k]] = done[k].Task;
                _reduced[layers[k]] = reduced[k].Task;
            }
            var order = layers.ToArray();
            _jobs.Add(() => ReduceDeferred(order, step, optimizerSteps, done, reduced));
        }
    }

    private int _allArrivals;

    /// <summary>A deferred step on the collective thread: every layer summed and all-reduced, then the factor, then the updates in order.</summary>
    private void ReduceDeferred(int[] layers, long step, long[] optimizerSteps, TaskCompletionSource[] done, TaskCompletionSource[] reduced)
    {
        try
        {
            for (var k = 0; k < layers.Length; k++)
            {
                var layer = layers[k];
                var n = _layout.Layers[layer].Length;
                var sum = SumReplicas(layer, n);
                if (R > 1)
                {
                    var t0 = Stopwatch.GetTimestamp();
                    _setup.Collectives.AllReduceSum(Pointer(sum), n);
                    CollectiveEnded(t0);
                }
                _sumSquares[layer] = SumOfSquares(sum.Slice(0, (int)n));
                reduced[k].SetResult();
            }
            var factor = GlobalFactor?.Invoke(_sumSquares.Select(x => (float)x).ToArray()) ?? 1f;
            _ = Task.Run(() =>
            {
                for (var k = 0; k < layers.Length; k++)
                {
                    try
                    {
                        var n = _layout.Layers[layers[k]].Length;
                        _update(layers[k], step, optimizerSteps[k], factor, SumBuffer(layers[k]).Slice(0, (int)n), 0, n);
                        done[k].SetResult();
                    }
                    catch (Exception e)
                    {
                        // A failed layer fails its own wait and every later one's: none of them was updated.
                        for (var j = k; j < layers.Length; j++) done[j].TrySetException(e);
                        return;
                    }
                }
            });
        }
        catch (Exception e)
        {
            foreach (var r in reduced) r.TrySetException(e);
            foreach (var d in done) d.TrySetException(e);
        }
    }

    /// <summary>Whether <paramref name="layer"/> has a reduction or update that has not finished.</summary>
    public bool IsPending(int layer) => !_done[layer].IsCompleted;

    /// <summary>
    /// Blocks until <paramref name="layer"/>'s update is done; the time spent waiting for its cross-rank collectives is
    /// added to <paramref name="collectiveWaitTicks"/>.
    /// </summary>
    public void Wait(int layer, ref long collectiveWaitTicks)
    {
        var reduced = _reduced[layer];
        if (R > 1 && !reduced.IsCompleted)
        {
            var start = Stopwatch.GetTimestamp();
            try { reduced.GetAwaiter().GetResult(); }
            finally { collectiveWaitTicks += Stopwatch.GetElapsedTime(start).Ticks; }
        }
        _done[layer].GetAwaiter().GetResult();
    }

    /// <summary>Blocks until every queued reduction and update is done.</summary>
    public void WaitAll()
    {
        long ignored = 0;
        for (var i = 0; i < _done.Length; i++)
            Wait(i, ref ignored);
    }

    /// <summary>Clears the per-layer sums of squares before a step's first gradients arrive.</summary>
    public void BeginStep() => Array.Clear(_sumSquares);

    /// <summary>
    /// This step's sum over layers of the squared reduced gradients (this rank's shards only when sharded), read on the
    /// collective thread after every queued layer; call from a job.
    /// </summary>
    private double StepSumSquares() => _sumSquares.Sum();

    /// <summary>
    /// Sums <paramref name="values"/> over ranks in rank order (as doubles, moved bit for bit by an all-gather), on the
    /// collective thread after every layer queued so far. The last value may be replaced by this rank's sum of squares
    /// of the step's reduced gradients (<paramref name="appendSumSquares"/>).
    /// </summary>
    public double[] SumOverRanks(double[] values, bool appendSumSquares = false)
    {
        if (R == 1 && !appendSumSquares)
            return values;
        return RunOnThread(() =>
        {
            var local = appendSumSquares ? [.. values, _setup.ShardOptimizer || _setup.Rank == 0 ? StepSumSquares() : 0] : values;
            if (R == 1)
                return local;
            var all = new double[R * local.Length];
            fixed (double* block = local)
            fixed (double* gathered = all)
                { var t0 = Stopwatch.GetTimestamp(); _setup.Collectives.AllGather((float*)block, (float*)gathered, 2L * local.Length); CollectiveEnded(t0); }
            var sums = new double[local.Length];
            for (var q = 0; q < R; q++)
                for (var k = 0; k < sums.Length; k++)
                    sums[k] += all[q * local.Length + k];
            return sums;
        });
    }

    /// <summary>
    /// The full optimizer state of every layer from the shards of every rank (sharded only): an all-gather per layer on
    /// the collective thread, in layer order (every rank must ask at the same point).
    /// </summary>
    public float[][] GatherState(int statePerParam, Func<int, float[]> shardState)
    {
        return RunOnThread(() =>
        {
            var states = new float[_layout.Layers.Count][];
            foreach (var layer in _layout.Layers)
            {
                var n = layer.Length;
                var block = statePerParam * ShardLayout.ShardLength(n, R);
                var mine = new float[block];
                shardState(layer.Index).CopyTo(mine, 0);
                var all = new float[R * block];
                fixed (float* b = mine)
                fixed (float* a = all)
                    { var t0 = Stopwatch.GetTimestamp(); _setup.Collectives.AllGather(b, a, block); CollectiveEnded(t0); }
                var full = new float[statePerParam * n];
                for (var q = 0; q < R; q++)
                {
                    var (lo, hi) = ShardLayout.Range(n, R, q);
                    ShardLayout.CopyState(layer, statePerParam, lo, hi, all.AsSpan((int)(q * block), (int)block), full, toFull: true);
                }
                states[layer.Index] = full;
            }
            return states;
        });
    }

    /// <summary>Ends every wait with <paramref name="failure"/> (a replica failed, so the step's layers will not all arrive).</summary>
    public void Fail(Exception failure)
    {
        lock (_gate)
        {
            _failure ??= failure;
            Monitor.PulseAll(_gate);
        }
    }

    private T RunOnThread<T>(Func<T> job)
    {
        var result = new TaskCompletionSource<T>(TaskCreationOptions.RunContinuationsAsynchronously);
        _jobs.Add(() =>
        {
            try { result.SetResult(job()); }
            catch (Exception e) { result.SetException(e); }
        });
        return result.Task.GetAwaiter().GetResult();
    }

    /// <summary>Adds the time since <paramref name="start"/> (a <see cref="Stopwatch"/> timestamp) to the collective time.</summary>
    private void CollectiveEnded(long start) => Interlocked.Add(ref _collectiveTicks, Stopwatch.GetElapsedTime(start).Ticks);

    private void Run()
    {
        foreach (var job in _jobs.GetConsumingEnumerable())
            job();
    }

    /// <summary>One layer on the collective thread: device-order sum, cross-rank reduction, update.</summary>
    private void Reduce(int layer, long step, long optimizerStep, TaskCompletionSource done, TaskCompletionSource reduced)
    {
        var n = _layout.Layers[layer].Length;
        var ownerReleased = false;
        try
        {
            // The sum lives in replica 0's buffer (or, 16-bit, in the FP32 sum buffer of replica 0's slot), so replica 0's
            // slot is held until the update is done; the others are free once summed.
            var sum = SumReplicas(layer, n);
            for (var d = 1; d < _replicas.Length; d++)
                Release(d, layer);
            if (!_setup.ShardOptimizer)
            {
                if (R > 1)
                    { var t0 = Stopwatch.GetTimestamp(); _setup.Collectives.AllReduceSum(Pointer(sum), n); CollectiveEnded(t0); }
                reduced.SetResult();
                _sumSquares[layer] = SumOfSquares(sum.Slice(0, (int)n));
                var factor = LayerClip?.Invoke((float)_sumSquares[layer]) ?? 1f;
                ownerReleased = true;
                _ = Task.Run(() =>
                {
                    try
                    {
                        _update(layer, step, optimizerStep, factor, sum.Slice(0, (int)n), 0, n);
                        done.SetResult();
                    }
                    catch (Exception e) { done.SetException(e); }
                    finally { Release(0, layer); }
                });
                return;
            }
            var s = ShardLayout.ShardLength(n, R);
            var (lo, hi) = ShardLayout.Range(n, R, _setup.Rank);
            var shard = _shard!.Slice(0, (int)s);
            { var t0 = Stopwatch.GetTimestamp(); _setup.Collectives.ReduceScatterBlockSum(Pointer(sum), Pointer(_shard!), s); CollectiveEnded(t0); }
            Release(0, layer);
            ownerReleased = true;
            _sumSquares[layer] = SumOfSquares(shard[..(int)(hi - lo)]);
            var shardFactor = 1f;
            if (LayerClip is { } clip)
            {
                // The layer's norm needs every rank's shard: the ranks' sums of squares, added in rank order.
                double* mine = stackalloc double[1];
                double* all = stackalloc double[R];
                mine[0] = _sumSquares[layer];
                { var t0 = Stopwatch.GetTimestamp(); _setup.Collectives.AllGather((float*)mine, (float*)all, 2); CollectiveEnded(t0); }
                var total = 0.0;
                for (var q = 0; q < R; q++) total += all[q];
                shardFactor = clip((float)total);
            }
            if (hi > lo)
                _update(layer, step, optimizerStep, shardFactor, shard[..(int)(hi - lo)], lo, hi);
            var weights = _weights(layer).Span;
            var gather = _gather!.Slice(0, (int)(R * s));
            weights[(int)lo..(int)hi].CopyTo(gather.Slice((int)(_setup.Rank * s), (int)s));
            fixed (float* all = gather)
                { var t0 = Stopwatch.GetTimestamp(); _setup.Collectives.AllGather(all + _setup.Rank * s, all, s); CollectiveEnded(t0); }
            gather[..(int)n].CopyTo(weights);
            reduced.SetResult();
            done.SetResult();
        }
        catch (Exception e)
        {
            if (!ownerReleased) Release(0, layer);
            reduced.TrySetException(e);
            done.TrySetException(e);
        }
    }

    private void Release(int replica, int layer)
    {
        lock (_gate)
        {
            var staging = _replicas[replica];
            var slot = staging.SlotOfLayer[layer];
            if (slot >= 0)
            {
                staging.SlotOwner[slot] = -1;
                staging.SlotOfLayer[layer] = -1;
                Monitor.PulseAll(_gate);
            }
        }
    }

    /// <summary>Where layer <paramref name="layer"/>'s summed gradients are: replica 0's staging, or (16-bit) the FP32 sum buffer of its slot.</summary>
    private PinnedHostBuffer<float> SumBuffer(int layer) =>
        _sums is null ? _replicas[0].Buffer(layer) : _sums.Own[layer] ?? _sums.Slots[_replicas[0].SlotOfLayer[layer]];

    /// <summary>Sums every replica's gradients of <paramref name="layer"/> in device order (widened first at 16-bit precision) and returns the sum.</summary>
    private PinnedHostBuffer<float> SumReplicas(int layer, long n)
    {
        var sum = SumBuffer(layer);
        if (_sums is null)
        {
            if (_replicas.Length > 1)
            {
                var sources = new nint[_replicas.Length];
                for (var d = 0; d < sources.Length; d++)
                    sources[d] = (nint)Pointer(_replicas[d].Buffer(layer));
                OrderedSum.Sum((float*)sources[0], sources, n, maxThreads: _threads);
            }
            return sum;
        }
        var chunks = (int)((n + OrderedSum.ChunkElements - 1) / OrderedSum.ChunkElements);
        var options = new ParallelOptions { MaxDegreeOfParallelism = _threads > 0 ? _threads : Environment.ProcessorCount };
        System.Threading.Tasks.Parallel.For(0, chunks, options, () => new float[OrderedSum.ChunkElements], (c, _, scratch) =>
        {
            var start = (long)c * OrderedSum.ChunkElements;
            var length = (int)Math.Min(OrderedSum.ChunkElements, n - start);
            var target = sum.Slice(start, length);
            Widen(_replicas[0].Buffer16(layer).Slice(start, length), target);
            var term = scratch.AsSpan(0, length);
            for (var d = 1; d < _replicas.Length; d++)
            {
                Widen(_replicas[d].Buffer16(layer).Slice(start, length), term);
                Add(target, term);
            }
            return scratch;
        }, _ => { });
        return sum;
    }

    /// <summary>Widens 16-bit gradients of the reducer's precision to FP32 (exact).</summary>
    private void Widen(ReadOnlySpan<ushort> source, Span<float> target)
    {
        if (_precision == Precision.Bf16)
            Optim.Bf16Convert.ToSingle(System.Runtime.InteropServices.MemoryMarshal.Cast<ushort, L2L.Kernels.Bf16>(source), target);
        else
            Optim.HalfConvert.ToSingle(System.Runtime.InteropServices.MemoryMarshal.Cast<ushort, System.Half>(source), target);
    }

    /// <summary><c>target += term</c> element by element (one IEEE add each, as <see cref="OrderedSum"/> does).</summary>
    private static void Add(Span<float> target, ReadOnlySpan<float> term)
    {
        var w = System.Numerics.Vector<float>.Count;
        var i = 0;
        for (; i + w <= target.Length; i += w)
            (new System.Numerics.Vector<float>(target.Slice(i, w)) + new System.Numerics.Vector<float>(term.Slice(i, w))).CopyTo(target.Slice(i, w));
        for (; i < target.Length; i++)
            target[i] += term[i];
    }

    private static float* Pointer(PinnedHostBuffer<float> buffer)
    {
        fixed (float* p = buffer.Span) return p; // the buffer is native memory: it does not move
    }

    /// <summary>Σ x², accumulated in double in a fixed order (the same bits on every run).</summary>
    private static double SumOfSquares(ReadOnlySpan<float> x)
    {
        var w = System.Numerics.Vector<float>.Count;
        var acc0 = System.Numerics.Vector<double>.Zero;
        var acc1 = System.Numerics.Vector<double>.Zero;
        var i = 0;
        for (; i + w <= x.Length; i += w)
        {
            System.Numerics.Vector.Widen(new System.Numerics.Vector<float>(x.Slice(i, w)), out var lo, out var hi);
            acc0 += lo * lo;
            acc1 += hi * hi;
        }
        var total = System.Numerics.Vector.Sum(acc0) + System.Numerics.Vector.Sum(acc1);
        for (; i < x.Length; i++)
            total += (double)x[i] * x[i];
        return total;
    }

    /// <inheritdoc/>
    public void Dispose()
    {
        _jobs.CompleteAdding();
        _thread.Join();
        try { WaitAll(); } catch (Exception) { /* release pinned memory regardless */ }
        foreach (var s in _replicas) s.Dispose();
        _sums?.Dispose();
        _shard?.Dispose();
        _gather?.Dispose();
        _jobs.Dispose();
    }

    /// <summary>One replica's pinned gradient staging: a ring of block-sized slots and own buffers for longer layers, FP32 or 16-bit.</summary>
    private sealed class Staging : IDisposable
    {
        public Staging(Backend backend, ModelLayout layout, long slotLength, int slots, Func<long, long> staged, Precision precision)
        {
            var count = layout.Layers.Count;
            var wide = !precision.Is16Bit();
            Own = new PinnedHostBuffer<float>?[wide ? count : 0];
            Own16 = new PinnedHostBuffer<ushort>?[wide ? 0 : count];
            SlotOfLayer = Enumerable.Repeat(-1, count).ToArray();
            Slots = [];
            Slots16 = [];
            SlotOwner = [];
            ElementSize = precision.ElementSize();
            try
            {
                foreach (var layer in layout.Layers)
                {
                    if (staged(layer.Length) <= slotLength)
                        continue;
                    if (wide) Own[layer.Index] = backend.AllocatePinned<float>(staged(layer.Length));
                    else Own16[layer.Index] = backend.AllocatePinned<ushort>(staged(layer.Length));
                }
                var ring = slotLength > 0 ? slots : 0;
                Slots = new PinnedHostBuffer<float>[wide ? ring : 0];
                Slots16 = new PinnedHostBuffer<ushort>[wide ? 0 : ring];
                for (var k = 0; k < Slots.Length; k++)
                    Slots[k] = backend.AllocatePinned<float>(slotLength);
                for (var k = 0; k < Slots16.Length; k++)
                    Slots16[k] = backend.AllocatePinned<ushort>(slotLength);
                SlotOwner = Enumerable.Repeat(-1, ring).ToArray();
            }
            catch
            {
                Dispose();
                throw;
            }
        }

        public PinnedHostBuffer<float>[] Slots { get; }
        public PinnedHostBuffer<ushort>[] Slots16 { get; }
        public int[] SlotOwner { get; }
        public int[] SlotOfLayer { get; }
        public PinnedHostBuffer<float>?[] Own { get; }
        public PinnedHostBuffer<ushort>?[] Own16 { get; }
        private int ElementSize { get; }

        /// <summary>Whether <paramref name="layer"/> has a buffer of its own (outside the ring).</summary>
        public bool HasOwn(int layer) => Own.Length > 0 ? Own[layer] is not null : Own16[layer] is not null;

        public long Bytes => ElementSize * (Slots.Sum(s => s.Length) + Slots16.Sum(s => s.Length) + Own.Sum(o => o?.Length ?? 0) + Own16.Sum(o => o?.Length ?? 0));

        public PinnedHostBuffer<float> Buffer(int layer) => Own[layer] ?? Slots[SlotOfLayer[layer]];

        public PinnedHostBuffer<ushort> Buffer16(int layer) => Own16[layer] ?? Slots16[SlotOfLayer[layer]];

        public void Dispose()
        {
            foreach (var s in Slots ?? []) s?.Dispose();
            foreach (var s in Slots16 ?? []) s?.Dispose();
            foreach (var o in Own) o?.Dispose();
            foreach (var o in Own16) o?.Dispose();
        }
    }
}
