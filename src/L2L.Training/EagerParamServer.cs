// The eager param server: FP32 master weights, gradients and optimizer state in host memory, updated layer by layer.
using ILGPU;
using ILGPU.Runtime;
using L2L.Backends;
using L2L.Model;
using L2L.Training.Optim;
using L2L.Training.Parallel;

namespace L2L.Training;

/// <summary>
/// Holds the whole model on the host: per layer, FP32 master weights (pinned and page-locked, so
/// transfers run asynchronously on the copy stream) and optimizer state, plus a small ring of
/// layer-sized pinned gradient buffers for the layers in flight. A layer is updated on host threads as soon as its gradients have arrived
/// (<see cref="BeginUpdate"/>), while the device goes on with other layers; the next fetch of
/// that layer (<see cref="EnqueueFetch"/>) first waits for its update. The tied token embedding
/// lives in one layer, so it is updated once, after both of its gradient contributions have
/// been summed on the device.
/// </summary>
/// <remarks>
/// In <see cref="L2L.Training.Update.UpdateMode.Deferred"/> mode (global-norm clipping, dynamic loss scaling) every
/// host-updated layer's gradients must stay until backward ends, so each such layer has its own gradient
/// buffer instead of the ring; <see cref="BeginUpdatesInOrder"/> then runs the updates one after another in
/// forward order, and a fetch waits only for its own layer's update.
/// <para>At a 16-bit <see cref="Precision"/> (bf16, fp16) the masters and the optimizer state stay FP32; each layer also
/// has a pinned 16-bit copy, written by the optimizer in the same pass as the update and uploaded by
/// <see cref="EnqueueFetch{T}"/>, and the gradient buffers hold the 16-bit gradients <see cref="EnqueueGradients{T}"/>
/// receives, which the optimizer widens as it loads them: half the bus bytes of FP32 for weights and gradients.</para>
/// </remarks>
public sealed class EagerParamServer : IDisposable
{
    private readonly PinnedHostBuffer<float>[] _weights;
    private readonly Precision _precision;
    private readonly PinnedHostBuffer<ushort>[] _weights16; // 16-bit precision: each layer's copy the device fetches, else empty
    private readonly AcceleratorStream?[] _staleCopy;       // device-updated layers whose copy waits for a stored master (the store's stream)
    private readonly GradBuffer[] _gradSlots;
    private readonly int[] _slotOwner;   // the layer whose gradients occupy each slot, or -1
    private readonly int[] _slotOfLayer; // the slot holding each layer's gradients, or -1
    private readonly GradBuffer?[] _ownGrads; // layers longer than a slot (e.g. an embedding updated here) have their own
    private readonly GradBuffer?[] _gradsOf;  // where each layer's gradients are while they wait for or feed an update
    private readonly long[] _updateOrder; // when each layer's pending update was begun
    private long _updatesBegun;
    private readonly float[][] _state;
    private readonly ushort[][] _state16; // BF16 optimizer state (StatePrecision.Bf16), else empty
    private readonly StatePrecision _statePrecision;
    private readonly Task?[] _updates;
    private readonly IHostOptimizer _optimizer;
    private readonly HostOptimizerBase _core; // the same optimizer, through the entry that takes 16-bit gradients and a gradient factor
    private readonly bool[] _onDevice;
    private long _weightBusBytes, _gradientBusBytes;
    private long _updateWaitTicks;
    private readonly L2L.Training.Update.UpdateMode _mode;
    // Data parallel (several devices or ranks): the reducer owns the gradient staging; replica views share this server's
    // weights and state and route their fetches and gradients through it.
    private readonly ParallelSetup? _parallel;
    private readonly GradientReducer? _reducer;
    private readonly EagerParamServer? _root;
    private readonly int _replica;
    private long _collectiveWaitTicks;
    private long _stepsDone;

    /// <summary>Gradient buffers in the ring unless the executor asks for another count.</summary>
    public const int DefaultGradientSlots = 3;

    /// <summary>Creates the server with <paramref name="initial"/> weights (one array per layer of <paramref name="layout"/>).</summary>
    /// <param name="backend">The device whose page-locked memory the buffers use.</param>
    /// <param name="layout">The model's layers.</param>
    /// <param name="initial">The initial weights, one array per layer (copied).</param>
    /// <param name="optimizer">The host optimizer and its hyper-parameters.</param>
    /// <param name="schedule">The learning-rate schedule.</param>
    /// <param name="resume">Optimizer state and step to continue from.</param>
    /// <param name="threads">Host optimizer threads (null: all cores).</param>
    /// <param name="deviceUpdated">
    /// Layers the executor updates on the device (see <see cref="Update.DeviceLayerOptimizer"/>): the server
    /// keeps their weights for checkpoints (the executor writes them back with <see cref="EnqueueStoreWeights"/>)
    /// but no gradient buffer and no optimizer state for them.
    /// </param>
    /// <param name="gradientSlots">Layer-sized gradient buffers in the ring (at least 2).</param>
    /// <param name="mode">Eager (a ring of gradient buffers) or deferred (a gradient buffer per host-updated layer).</param>
    /// <param name="statePrecision">FP32 or BF16 (stochastically rounded) storage of the host optimizer's state.</param>
    /// <param name="parallel">
    /// Data parallel over several devices and/or ranks (null or one device of one rank: a plain server). Every layer is
    /// then updated here, once, from the gradients of every device and rank; see <see cref="ParallelRelay"/>.
    /// </param>
    /// <param name="precision">
    /// What crosses the bus: FP32 weights and gradients, or (bf16, fp16) a 16-bit copy of each layer's weights, written by
    /// the optimizer in its update pass, and 16-bit gradients, widened to FP32 in that pass. Master weights and optimizer
    /// state are FP32 in every case.
    /// </param>
    public EagerParamServer(Backend backend, ModelLayout layout, IReadOnlyList<float[]> initial, OptimizerSettings optimizer,
        LearningRateSchedule schedule, TrainingState? resume = null, int? threads = null, IReadOnlyCollection<int>? deviceUpdated = null,
        int gradientSlots = DefaultGradientSlots, L2L.Training.Update.UpdateMode mode = L2L.Training.Update.UpdateMode.Eager,
        StatePrecision statePrecision = StatePrecision.Fp32, ParallelSetup? parallel = null, Precision precision = Precision.Fp32)
        : this(backend, layout, CopyFrom(layout, initial), optimizer, schedule, resume, threads, deviceUpdated, gradientSlots, mode, statePrecision, parallel, precision)
    {
    }

    /// <summary>
    /// Creates the server, letting <paramref name="initialize"/> write each layer's initial weights
    /// straight into the server's pinned buffer (so they are never held twice).
    /// </summary>
    /// <param name="backend">The device whose page-locked memory the buffers use.</param>
    /// <param name="layout">The model's layers.</param>
    /// <param name="initialize">Writes layer <c>i</c>'s initial weights into the span (its whole block); called for several layers at once.</param>
    /// <param name="optimizer">The host optimizer and its hyper-parameters.</param>
    /// <param name="schedule">The learning-rate schedule.</param>
    /// <param name="resume">Optimizer state and step to continue from.</param>
    /// <param name="threads">Host optimizer threads (null: all cores).</param>
    /// <param name="deviceUpdated">Layers the executor updates on the device (no gradient buffer or state here).</param>
    /// <param name="gradientSlots">Layer-sized gradient buffers in the ring (at least 2).</param>
    /// <param name="mode">Eager (a ring of gradient buffers) or deferred (a gradient buffer per host-updated layer).</param>
    /// <param name="statePrecision">FP32 or BF16 (stochastically rounded) storage of the host optimizer's state.</param>
    /// <param name="parallel">Data parallel over several devices and/or ranks (null or one device of one rank: a plain server).</param>
    /// <param name="precision">FP32, or a 16-bit copy of the weights and 16-bit gradients on the bus (FP32 masters and state here).</param>
    public EagerParamServer(Backend backend, ModelLayout layout, Action<int, Span<float>> initialize, OptimizerSettings optimizer,
        LearningRateSchedule schedule, TrainingState? resume = null, int? threads = null, IReadOnlyCollection<int>? deviceUpdated = null,
        int gradientSlots = DefaultGradientSlots, L2L.Training.Update.UpdateMode mode = L2L.Training.Update.UpdateMode.Eager,
        StatePrecision statePrecision = StatePrecision.Fp32, ParallelSetup? parallel = null, Precision precision = Precision.Fp32)
    {
        parallel?.Validate();
        if (parallel is { IsParallel: true })
        {
            _parallel = parallel;
            CheckParallel(parallel, deviceUpdated, mode, statePrecision, optimizer.Kind, precision);
        }
        _precision = precision;
        var ranks = _parallel is { ShardOptimizer: true } ? _parallel.WorldSize : 1;
        if (statePrecision == StatePrecision.Bf16 && optimizer.Kind != OptimizerKind.AdamW)
            throw new ArgumentException("--optimizer-state bf16 stores AdamW's moments; it needs --optimizer adamw.");
        _statePrecision = statePrecision;
        ArgumentOutOfRangeException.ThrowIfLessThan(gradientSlots, 2);
        Layout = layout;
        Settings = optimizer;
        Schedule = schedule;
        _mode = mode;
        _optimizer = HostOptimizers.Create(optimizer, threads);
        _core = (HostOptimizerBase)_optimizer;
        var count = layout.Layers.Count;
        _weights = new PinnedHostBuffer<float>[count];
        _state = new float[count][];
        _state16 = new ushort[count][];
        _updates = new Task?[count];
        _updateOrder = new long[count];
        _slotOfLayer = Enumerable.Repeat(-1, count).ToArray();
        _ownGrads = new GradBuffer?[count];
        _gradsOf = new GradBuffer?[count];
        _weights16 = new PinnedHostBuffer<ushort>[precision.Is16Bit() ? count : 0];
        _staleCopy = new AcceleratorStream?[count];
        _onDevice = new bool[count];
        foreach (var i in deviceUpdated ?? [])
            _onDevice[i] = true;
        if (resume is not null && (resume.StateFloatsPerParam != _optimizer.StateFloatsPerParam || !string.Equals(resume.Optimizer, OptimizerName(optimizer.Kind), StringComparison.OrdinalIgnoreCase)))
            throw new InvalidDataException(
                $"The checkpoint's optimizer state is for '{resume.Optimizer}' ({resume.StateFloatsPerParam} floats per parameter), " +
                $"but training uses '{OptimizerName(optimizer.Kind)}'. Resume with --optimizer {resume.Optimizer}, or start fresh with --init instead of --resume.");
        try
        {
            for (var i = 0; i < count; i++)
            {
                var length = layout.Layers[i].Length;
                _weights[i] = backend.AllocatePinned<float>(length);
                if (precision.Is16Bit())
                    _weights16[i] = backend.AllocatePinned<ushort>(length);
                var (lo, hi) = ShardLayout.Range(length, ranks, ranks > 1 ? _parallel!.Rank : 0);
                var stateLength = _onDevice[i] ? 0 : _optimizer.StateFloatsPerParam * (hi - lo);
                var bf16 = statePrecision == StatePrecision.Bf16;
                _state[i] = bf16 ? [] : new float[stateLength];
                _state16[i] = bf16 ? new ushort[stateLength] : [];
                if (resume is not null && !_onDevice[i])
                {
                    if (bf16)
                        for (var k = 0; k < stateLength; k++) _state16[i][k] = Bf16State.RoundNearest(resume.LayerStates[i][k]);
                    else if (ranks > 1)
                        ShardLayout.CopyState(layout.Layers[i], _optimizer.StateFloatsPerParam, lo, hi, _state[i], resume.LayerStates[i], toFull: false);
                    else
                        resume.LayerStates[i].AsSpan().CopyTo(_state[i]);
                }
            }
            // Gradients only for the layers in flight: a layer's gradients land in a free slot of a ring
            // sized for the repeated block, and the slot is released when its update finishes, so the host
            // never holds a full gradient copy. A host-updated layer longer than a block gets its own buffer.
            // Deferred updates need every host-updated layer's gradients at the end of backward: no ring, a buffer each.
            // In data parallel the reducer stages the gradients: no ring here.
            var slotLength = _parallel is not null ? 0 : GradientSlotLength(layout, _onDevice, mode);
            foreach (var layer in layout.Layers)
            {
                if (!_onDevice[layer.Index] && layer.Length > slotLength && _parallel is null)
                    _ownGrads[layer.Index] = new GradBuffer(backend, layer.Length, precision);
            }
            System.Threading.Tasks.Parallel.For(0, count, i =>
            {
                initialize(i, _weights[i].Span);
                RoundCopy(i);
            });
            _gradSlots = new GradBuffer[slotLength > 0 ? gradientSlots : 0];
            for (var k = 0; k < _gradSlots.Length; k++)
                _gradSlots[k] = new GradBuffer(backend, slotLength, precision);
            _slotOwner = Enumerable.Repeat(-1, _gradSlots.Length).ToArray();
            if (_parallel is not null)
                _reducer = new GradientReducer(_parallel, layout, gradientSlots, threads ?? 0, ParallelUpdate, i => _weights[i],
                    deferred: mode == L2L.Training.Update.UpdateMode.Deferred, precision: precision);
        }
        catch
        {
            foreach (var w in _weights) w?.Dispose();
            foreach (var w in _weights16) w?.Dispose();
            foreach (var g in _ownGrads) g?.Dispose();
            foreach (var g in _gradSlots ?? []) g?.Dispose();
            throw;
        }
        if (resume is not null)
            StepsDone = resume.Step;
        OptimizerStateBytes = sizeof(float) * _state.Sum(st => (long)st.Length) + sizeof(ushort) * _state16.Sum(st => (long)st.Length);
        HostBytes = sizeof(float) * _weights.Sum(w => w.Length) + sizeof(ushort) * _weights16.Sum(w => w.Length)
            + _gradSlots.Sum(g => g.Bytes) + _ownGrads.Sum(g => g?.Bytes ?? 0) + OptimizerStateBytes + (_reducer?.HostBytes ?? 0);
    }

    /// <summary>What data parallel refuses, each with the option to change.</summary>
    private static void CheckParallel(ParallelSetup parallel, IReadOnlyCollection<int>? deviceUpdated, L2L.Training.Update.UpdateMode mode,
        StatePrecision statePrecision, OptimizerKind optimizer, Precision precision)
    {
        var what = $"{parallel.DeviceCount} device(s) x {parallel.WorldSize} rank(s)";
        if (precision.Is16Bit() && parallel.ShardOptimizer)
            throw new ArgumentException($"--precision {precision.Name()} with --shard-optimizer is not implemented: use --precision fp32, or leave --shard-optimizer off.");
        if (deviceUpdated is { Count: > 0 })
            throw new ArgumentException($"Data parallel ({what}) updates every layer on the host, from every device's gradients; use --embedding-update host.");
        if (mode == L2L.Training.Update.UpdateMode.Deferred && parallel.ShardOptimizer)
            throw new ArgumentException($"Deferred updates (global gradient clipping) keep every layer's reduced gradients until the step's norm is known, which the sharded optimizer does not; leave --shard-optimizer off with --update-mode deferred or global clipping.");
        if (parallel.ShardOptimizer && statePrecision == StatePrecision.Bf16)
            throw new ArgumentException("Sharding the optimizer state keeps it in FP32; use --optimizer-state fp32 with --shard-optimizer.");
        if (parallel.ShardOptimizer && optimizer == OptimizerKind.Lamb)
            throw new ArgumentException("LAMB's trust ratio needs each whole tensor, which a shard splits; use --optimizer adamw or sgd with --shard-optimizer.");
    }

    /// <summary>A view of <paramref name="root"/> for the replica on device <paramref name="replica"/>: same weights and state, its own transfer counters.</summary>
    private EagerParamServer(EagerParamServer root, int replica)
    {
        _root = root;
        _replica = replica;
        _parallel = root._parallel;
        _reducer = root._reducer;
        _weights = root._weights;
        _precision = root._precision;
        _weights16 = root._weights16;
        _staleCopy = root._staleCopy;
        _core = root._core;
        _gradSlots = root._gradSlots;
        _slotOwner = root._slotOwner;
        _slotOfLayer = root._slotOfLayer;
        _ownGrads = root._ownGrads;
        _gradsOf = root._gradsOf;
        _updateOrder = root._updateOrder;
        _state = root._state;
        _state16 = root._state16;
        _statePrecision = root._statePrecision;
        _updates = root._updates;
        _optimizer = root._optimizer;
        _onDevice = root._onDevice;
        _mode = root._mode;
        Layout = root.Layout;
        Settings = root.Settings;
        Schedule = root.Schedule;
        HostBytes = root.HostBytes;
        OptimizerStateBytes = root.OptimizerStateBytes;
    }

    /// <summary>
    /// The server as replica <paramref name="replica"/> of a data-parallel run sees it (data parallel only): its fetches
    /// read this server's weights, its gradients go to its own staging, and a layer is reduced and updated once every
    /// replica's gradients of it have arrived.
    /// </summary>
    /// <param name="replica">The device's index in the data-parallel setup.</param>
    /// <exception cref="InvalidOperationException">The server is not a data-parallel root.</exception>
    public EagerParamServer Replica(int replica)
    {
        if (_reducer is null || _root is not null)
            throw new InvalidOperationException("Replica views exist only on a data-parallel param server.");
        ArgumentOutOfRangeException.ThrowIfGreaterThanOrEqual(replica, _parallel!.DeviceCount);
        return new EagerParamServer(this, replica);
    }

    /// <summary>The data-parallel setup, or null for a plain server.</summary>
    internal ParallelSetup? Parallel => _parallel;

    internal GradientReducer? Reducer => _reducer;

    /// <summary>Time this replica's fetches waited for cross-rank collectives of the layer they fetch.</summary>
    internal double CollectiveWaitSeconds => TimeSpan.FromTicks(Interlocked.Read(ref _collectiveWaitTicks)).TotalSeconds;

    /// <summary>
    /// Bytes of optimizer state this server (this rank) holds: the full state, or about 1/R of it with the optimizer
    /// sharded over R ranks.
    /// </summary>
    public long OptimizerStateBytes { get; }

    private void ParallelUpdate(int layer, long step, long optimizerStep, float factor, Span<float> grads, long lo, long hi)
    {
        if (_parallel is { ShardOptimizer: true })
        {
            if (factor != 1f)
                Scale(grads, factor);
            UpdateShard(layer, step, optimizerStep, grads, lo, hi);
        }
        else
        {
            Update(layer, step, optimizerStep, factor, grads);
        }
    }

    /// <summary>Applies the optimizer to this rank's shard [lo, hi) of a layer, from the shard's reduced gradients.</summary>
    private void UpdateShard(int layer, long step, long optimizerStep, Span<float> grads, long lo, long hi)
    {
        var lr = Schedule.At(step);
        var t = checked((int)optimizerStep);
        var spp = _optimizer.StateFloatsPerParam;
        var weights = _weights[layer].Span;
        var state = _state[layer].AsSpan();
        long pos = 0;
        foreach (var slot in Layout.Layers[layer].Tensors)
        {
            var a = Math.Max(lo, slot.Offset);
            var b = Math.Min(hi, slot.Offset + slot.Length);
            if (a >= b) continue;
            var n = (int)(b - a);
            _optimizer.Step(weights.Slice((int)a, n), grads.Slice((int)(a - lo), n), state.Slice((int)(spp * pos), spp * n), Span<System.Half>.Empty, t, lr * slot.LearningRateScale, slot.Decay);
            pos += n;
        }
    }

    /// <summary>
    /// Floats in each gradient buffer of the ring: the longest host-updated block's, or 0 (no ring) in deferred mode,
    /// where every host-updated layer has its own buffer; a host-updated layer longer than this gets its own buffer too.
    /// </summary>
    public static long GradientSlotLength(ModelLayout layout, IReadOnlyList<bool> deviceUpdated, L2L.Training.Update.UpdateMode mode) =>
        mode == L2L.Training.Update.UpdateMode.Deferred ? 0
            : layout.Blocks.Where(b => !deviceUpdated[b.Index]).Select(b => b.Length).DefaultIfEmpty(0).Max();

    /// <summary>
    /// The host memory a server with these settings holds, buffer by buffer (bytes as <see cref="BufferSpec.Bytes"/>):
    /// pinned FP32 weights per layer, the gradient ring or own gradient buffers (pinned), and the optimizer state
    /// (ordinary memory: <paramref name="stateFloatsPerParam"/> values per parameter of each host-updated layer, 4 or 2 bytes each).
    /// With a 16-bit <paramref name="precision"/>, also each layer's pinned 16-bit copy (<c>weights16</c>), and the gradient
    /// buffers hold 2-byte elements. Its sum is <see cref="HostBytes"/>.
    /// </summary>
    public static IReadOnlyList<BufferSpec> DescribeHost(ModelLayout layout, int stateFloatsPerParam, IReadOnlyCollection<int> deviceUpdated,
        int gradientSlots, L2L.Training.Update.UpdateMode mode, StatePrecision statePrecision, Precision precision = Precision.Fp32)
    {
        var gradSize = precision.ElementSize();
        var onDevice = new bool[layout.Layers.Count];
        foreach (var i in deviceUpdated) onDevice[i] = true;
        var slotLength = GradientSlotLength(layout, onDevice, mode);
        var result = new List<BufferSpec>();
        foreach (var layer in layout.Layers)
        {
            result.Add(new BufferSpec($"param-server.{layer.Name}.weights", MemoryCategory.Params, layer.Length));
            if (precision.Is16Bit())
                result.Add(new BufferSpec($"param-server.{layer.Name}.weights16", MemoryCategory.Params, layer.Length, sizeof(ushort)));
            if (!onDevice[layer.Index] && layer.Length > slotLength)
                result.Add(new BufferSpec($"param-server.{layer.Name}.grads", MemoryCategory.Grads, layer.Length, gradSize));
            if (!onDevice[layer.Index] && stateFloatsPerParam > 0)
                result.Add(new BufferSpec($"param-server.{layer.Name}.state", MemoryCategory.Optimizer, stateFloatsPerParam * layer.Length,
                    statePrecision == StatePrecision.Bf16 ? sizeof(ushort) : sizeof(float)));
        }
        if (slotLength > 0)
            for (var k = 0; k < gradientSlots; k++)
                result.Add(new BufferSpec($"param-server.grad-ring.{k}", MemoryCategory.Grads, slotLength, gradSize));
        return result;
    }

    private static Action<int, Span<float>> CopyFrom(ModelLayout layout, IReadOnlyList<float[]> initial)
    {
        var count = layout.Layers.Count;
        if (initial.Count != count)
            throw new ArgumentException($"Expected weights for {count} layers, got {initial.Count}.", nameof(initial));
        for (var i = 0; i < count; i++)
        {
            if (initial[i].Length != layout.Layers[i].Length)
                throw new ArgumentException($"Layer '{layout.Layers[i].Name}' has {initial[i].Length} weights, expected {layout.Layers[i].Length}.", nameof(initial));
        }
        return (i, target) => initial[i].AsSpan().CopyTo(target);
    }

    /// <summary>
    /// Host bytes this server holds: FP32 master weights, the gradient ring and the optimizer state
    /// (the param server's own accounting; pinned buffers included).
    /// </summary>
    public long HostBytes { get; }

    /// <summary>Host bytes per model parameter (<see cref="HostBytes"/> over the layout's parameter count).</summary>
    public double HostBytesPerParameter => Layout.TotalLength > 0 ? (double)HostBytes / Layout.TotalLength : 0;

    /// <summary>Eager (gradient ring) or deferred (a gradient buffer per host-updated layer).</summary>
    public L2L.Training.Update.UpdateMode Mode => _mode;

    /// <summary>
    /// What crosses the bus: FP32, or a 16-bit copy of the weights (<see cref="EnqueueFetch{T}"/>) and 16-bit gradients
    /// (<see cref="EnqueueGradients{T}"/>). The master weights and the optimizer state are FP32 whatever this is.
    /// </summary>
    public Precision Precision => _precision;

    /// <summary>Layer-sized gradient buffers in the ring.</summary>
    public int GradientSlots => _gradSlots.Length;

    /// <summary>The parameter layout.</summary>
    public ModelLayout Layout { get; }

    /// <summary>The optimizer settings.</summary>
    public OptimizerSettings Settings { get; }

    /// <summary>The learning-rate schedule.</summary>
    public LearningRateSchedule Schedule { get; }

    /// <summary>Optimizer steps completed (every layer has been updated this many times once pending updates finish).</summary>
    public long StepsDone
    {
        get => _root?.StepsDone ?? Interlocked.Read(ref _stepsDone);
        private set => _stepsDone = value;
    }

    /// <summary>Bytes moved between host and device by this server (weights in, gradients out).</summary>
    public long BusBytes => WeightBusBytes + GradientBusBytes;

    /// <summary>Weight bytes this server has copied to the device.</summary>
    public long WeightBusBytes => Interlocked.Read(ref _weightBusBytes);

    /// <summary>Gradient bytes this server has received from the device.</summary>
    public long GradientBusBytes => Interlocked.Read(ref _gradientBusBytes);

    /// <summary>
    /// Seconds the executor has spent blocked in <see cref="EnqueueFetch"/> waiting for a layer's host
    /// update to finish — the device idles for that long unless it has queued work.
    /// </summary>
    public double UpdateWaitSeconds => TimeSpan.FromTicks(Interlocked.Read(ref _updateWaitTicks)).TotalSeconds;

    /// <summary>Whether layer <paramref name="layer"/> has an update that has not finished yet (a fetch now would block).</summary>
    public bool IsUpdatePending(int layer) => _reducer?.IsPending(layer) ?? _updates[layer] is { IsCompleted: false };

    /// <summary>Whether the executor updates layer <paramref name="layer"/> on the device.</summary>
    public bool IsDeviceUpdated(int layer) => _onDevice[layer];

    /// <summary>The name used in checkpoints and on the command line.</summary>
    public static string OptimizerName(OptimizerKind kind) => kind.ToString().ToLowerInvariant();

    /// <summary>
    /// Enqueues the copy of layer <paramref name="layer"/>'s FP32 master weights into <paramref name="target"/>, after its
    /// pending update finishes. At every precision (a 16-bit server uploads FP32 masters this way, e.g. for the layers the
    /// device updates itself); the bus counts 4 bytes per element.
    /// </summary>
    public void EnqueueFetch(int layer, AcceleratorStream copyStream, ArrayView<float> target)
    {
        WaitBeforeFetch(layer);
        var length = Layout.Layers[layer].Length;
        _weights[layer].CopyToDeviceAsync(copyStream, target.SubView(0, length));
        Interlocked.Add(ref _weightBusBytes, length * sizeof(float));
    }

    /// <summary>
    /// Enqueues the copy of layer <paramref name="layer"/>'s weights in the server's <see cref="Precision"/> into
    /// <paramref name="target"/>, after its pending update finishes: the FP32 masters for fp32, else the 16-bit copy the
    /// optimizer wrote in its last update pass (the masters rounded to nearest even). The bus counts
    /// <see cref="Precisions.ElementSize"/> bytes per element.
    /// </summary>
    /// <typeparam name="T">The precision's storage type: <see cref="float"/>, <see cref="L2L.Kernels.Bf16"/> or <see cref="ILGPU.Half"/>.</typeparam>
    /// <exception cref="ArgumentException"><typeparamref name="T"/> is not the storage type of <see cref="Precision"/>.</exception>
    public void EnqueueFetch<T>(int layer, AcceleratorStream copyStream, ArrayView<T> target) where T : unmanaged
    {
        CheckStorage<T>("fetches weights");
        if (!_precision.Is16Bit())
        {
            EnqueueFetch(layer, copyStream, target.Cast<float>());
            return;
        }
        WaitBeforeFetch(layer);
        if (_staleCopy[layer] is { } store)
        {
            // A device-updated layer's stored masters: round them once they have landed, then upload.
            store.Synchronize();
            _staleCopy[layer] = null;
            RoundCopy(layer);
        }
        var length = Layout.Layers[layer].Length;
        _weights16[layer].CopyToDeviceAsync(copyStream, target.Cast<ushort>().SubView(0, length));
        Interlocked.Add(ref _weightBusBytes, length * sizeof(ushort));
    }

    /// <summary>Throws unless <typeparamref name="T"/> is the storage type of the server's precision.</summary>
    private void CheckStorage<T>(string what) where T : unmanaged
    {
        if (typeof(T) != _precision.StorageType())
            throw new ArgumentException($"This {_precision.Name()} param server {what} as {_precision.StorageType().Name}, not {typeof(T).Name}.", nameof(T));
    }

    /// <summary>Writes layer <paramref name="layer"/>'s 16-bit copy from its master weights (16-bit precision only).</summary>
    private void RoundCopy(int layer)
    {
        if (!_precision.Is16Bit())
            return;
        var master = _weights[layer].Span;
        var copy = _weights16[layer].Span;
        if (_precision == Precision.Bf16)
            Bf16Convert.ToBf16(master, System.Runtime.InteropServices.MemoryMarshal.Cast<ushort, L2L.Kernels.Bf16>(copy));
        else
            HalfConvert.ToHalf(master, System.Runtime.InteropServices.MemoryMarshal.Cast<ushort, System.Half>(copy));
    }

    /// <summary>What a fetch waits for: the layer's pending update (or, data parallel, its reduction and update).</summary>
    private void WaitBeforeFetch(int layer)
    {
        if (_reducer is not null)
        {
            var start = System.Diagnostics.Stopwatch.GetTimestamp();
            _reducer.Wait(layer, ref _collectiveWaitTicks);
            Interlocked.Add(ref _updateWaitTicks, System.Diagnostics.Stopwatch.GetElapsedTime(start).Ticks);
        }
        else if (_updates[layer] is not null)
        {
            var start = System.Diagnostics.Stopwatch.GetTimestamp();
            WaitForUpdate(layer);
            Interlocked.Add(ref _updateWaitTicks, System.Diagnostics.Stopwatch.GetElapsedTime(start).Ticks);
        }
    }

    /// <summary>Enqueues the copy of layer <paramref name="layer"/>'s summed FP32 gradients from <paramref name="source"/> to the host (an fp32 server only).</summary>
    public void EnqueueGradients(int layer, AcceleratorStream copyStream, ArrayView<float> source) => EnqueueGradients<float>(layer, copyStream, source);

    /// <summary>
    /// Enqueues the copy of layer <paramref name="layer"/>'s summed gradients, in the server's <see cref="Precision"/>,
    /// from <paramref name="source"/> into a host buffer of that precision (a 16-bit server's ring holds 2-byte elements);
    /// the update pass widens them to FP32 and applies the gradient factor after widening. The bus counts
    /// <see cref="Precisions.ElementSize"/> bytes per element.
    /// </summary>
    /// <typeparam name="T">The precision's storage type: <see cref="float"/>, <see cref="L2L.Kernels.Bf16"/> or <see cref="ILGPU.Half"/>.</typeparam>
    /// <exception cref="ArgumentException"><typeparamref name="T"/> is not the storage type of <see cref="Precision"/>.</exception>
    public void EnqueueGradients<T>(int layer, AcceleratorStream copyStream, ArrayView<T> source) where T : unmanaged
    {
        CheckStorage<T>("receives gradients");
        if (_onDevice[layer])
            throw new InvalidOperationException($"Layer '{Layout.Layers[layer].Name}' is updated on the device; its gradients stay there.");
        if (_reducer is not null)
        {
            CheckReplica();
            var n = Layout.Layers[layer].Length;
            if (_precision.Is16Bit())
                _reducer.Stage16(_replica, layer).CopyFromDeviceAsync(copyStream, source.Cast<ushort>().SubView(0, n), 0, n);
            else
                _reducer.Stage(_replica, layer).CopyFromDeviceAsync(copyStream, source.Cast<float>().SubView(0, n), 0, n);
            Interlocked.Add(ref _gradientBusBytes, n * _precision.ElementSize());
            return;
        }
        WaitForUpdate(layer);
        if (_gradsOf[layer] is not null)
            throw new InvalidOperationException($"Layer '{Layout.Layers[layer].Name}' already has gradients waiting for BeginUpdate.");
        if (_ownGrads[layer] is { } own)
        {
            _gradsOf[layer] = own;
        }
        else
        {
            var slot = AcquireSlot();
            _slotOwner[slot] = layer;
            _slotOfLayer[layer] = slot;
            _gradsOf[layer] = _gradSlots[slot];
        }
        var length = Layout.Layers[layer].Length;
        _gradsOf[layer]!.CopyFromDevice(copyStream, source, length);
        Interlocked.Add(ref _gradientBusBytes, length * _precision.ElementSize());
    }

    /// <summary>A free gradient slot; when none is free, waits for the earliest-begun update that holds one.</summary>
    private int AcquireSlot()
    {
        for (var k = 0; k < _slotOwner.Length; k++)
        {
            var owner = _slotOwner[k];
            if (owner < 0)
                return k;
            if (_updates[owner] is { IsCompleted: true })
            {
                WaitForUpdate(owner); // releases the slot (and surfaces a failed update)
                return k;
            }
        }
        var oldest = -1;
        foreach (var owner in _slotOwner)
        {
            if (_updates[owner] is not null && (oldest < 0 || _updateOrder[owner] < _updateOrder[oldest]))
                oldest = owner;
        }
        if (oldest < 0)
            throw new InvalidOperationException($"All {_slotOwner.Length} gradient slots hold gradients whose update has not begun.");
        var slot = _slotOfLayer[oldest];
        var start = System.Diagnostics.Stopwatch.GetTimestamp();
        WaitForUpdate(oldest);
        Interlocked.Add(ref _updateWaitTicks, System.Diagnostics.Stopwatch.GetElapsedTime(start).Ticks);
        return slot;
    }

    /// <summary>
    /// Starts updating layer <paramref name="layer"/> on host threads for 0-based step <paramref name="step"/>,
    /// first multiplying its gradients by <paramref name="gradientFactor"/> (unless 1) and with AdamW's 1-based
    /// step count <paramref name="optimizerStep"/> (default <c>step + 1</c>).
    /// Call only after the copy enqueued by <see cref="EnqueueGradients"/> has completed.
    /// </summary>
    public void BeginUpdate(int layer, long step, float gradientFactor = 1f, long? optimizerStep = null)
    {
        if (_reducer is not null)
        {
            CheckReplica();
            // The factor a replica passes comes from its own gradients' norm; per-layer clipping is applied by the
            // reducer from the reduced gradients instead (global clipping and loss scaling are refused).
            _reducer.Arrive(_replica, layer, step, optimizerStep ?? step + 1);
            return;
        }
        CheckUpdatable(layer);
        _updateOrder[layer] = ++_updatesBegun;
        var t = optimizerStep ?? step + 1;
        _updates[layer] = Task.Run(() => Update(layer, step, t, gradientFactor));
    }

    /// <summary>
    /// Starts the deferred updates of <paramref name="layers"/> (host-updated, in the given order, one after another
    /// on host threads), each layer's gradients first multiplied by <paramref name="gradientFactor"/>(layer) unless 1.
    /// A later fetch of one of them waits only for that layer's update, so the next step's forward can start on the
    /// first layers while the rest are still being updated.
    /// </summary>
    /// <param name="layers">The layers, in the order to update them.</param>
    /// <param name="step">The 0-based step (for the learning rate).</param>
    /// <param name="optimizerStep">Each layer's 1-based optimizer step (called once per layer, in order, on the calling thread).</param>
    /// <param name="gradientFactor">Each layer's gradient factor (called once per layer, on the calling thread).</param>
    public void BeginUpdatesInOrder(IReadOnlyList<int> layers, long step, Func<int, long> optimizerStep, Func<int, float> gradientFactor)
    {
        if (_reducer is not null)
        {
            CheckReplica();
            // The factors a replica passes come from its own gradients; the reducer takes the factor from the reduced ones.
            _reducer.ArriveAll(_replica, layers, step, layers.Select(optimizerStep).ToArray());
            return;
        }
        var done = new TaskCompletionSource[layers.Count];
        for (var k = 0; k < layers.Count; k++)
        {
            CheckUpdatable(layers[k]);
            done[k] = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        }
        var factors = layers.Select(gradientFactor).ToArray();
        var steps = layers.Select(optimizerStep).ToArray();
        for (var k = 0; k < layers.Count; k++)
        {
            _updateOrder[layers[k]] = ++_updatesBegun;
            _updates[layers[k]] = done[k].Task;
        }
        _ = Task.Run(() =>
        {
            for (var k = 0; k < layers.Count; k++)
            {
                try
                {
                    Update(layers[k], step, steps[k], factors[k]);
                    done[k].SetResult();
                }
                catch (Exception e)
                {
                    // A failed layer fails its own wait and every later one's: none of them was updated.
                    for (var j = k; j < layers.Count; j++) done[j].TrySetException(e);
                    return;
                }
            }
        });
    }

    /// <summary>Drops the gradients every layer holds without updating anything (a step skipped on overflow).</summary>
    public void DiscardGradients()
    {
        if (_reducer is not null)
            throw new InvalidOperationException("Steps skipped on overflow need dynamic loss scaling, which data parallel refuses.");
        for (var i = 0; i < _gradsOf.Length; i++)
        {
            if (_updates[i] is null && _gradsOf[i] is not null)
            {
                _gradsOf[i] = null;
                var slot = _slotOfLayer[i];
                if (slot >= 0)
                {
                    _slotOwner[slot] = -1;
                    _slotOfLayer[i] = -1;
                }
            }
        }
    }

    /// <summary>
    /// Drops layer <paramref name="layer"/>'s received gradients without updating it (its weights, state and 16-bit copy
    /// stay as they are) and releases its gradient slot: for a layer whose gradients overflowed. Call once their copy has
    /// completed, as for <see cref="BeginUpdate"/>.
    /// </summary>
    /// <exception cref="InvalidOperationException">The layer has no gradients waiting, or its update has begun.</exception>
    public void DiscardGradients(int layer)
    {
        if (_reducer is not null)
            throw new InvalidOperationException("A data-parallel param server reduces every replica's gradients of a layer; one layer's cannot be dropped.");
        if (_updates[layer] is not null)
            throw new InvalidOperationException($"Layer '{Layout.Layers[layer].Name}' is already being updated; its gradients can no longer be dropped.");
        if (_gradsOf[layer] is null)
            throw new InvalidOperationException($"Layer '{Layout.Layers[layer].Name}' has no gradients to drop; call EnqueueGradients first.");
        _gradsOf[layer] = null;
        var slot = _slotOfLayer[layer];
        if (slot >= 0)
        {
            _slotOwner[slot] = -1;
            _slotOfLayer[layer] = -1;
        }
    }

    private void CheckReplica()
    {
        if (_root is null)
            throw new InvalidOperationException("A data-parallel param server takes gradients through its replica views (one per device).");
    }

    private void CheckUpdatable(int layer)
    {
        if (_onDevice[layer])
            throw new InvalidOperationException($"Layer '{Layout.Layers[layer].Name}' is updated on the device.");
        if (_gradsOf[layer] is null)
            throw new InvalidOperationException($"Layer '{Layout.Layers[layer].Name}' has no gradients to apply; call EnqueueGradients first.");
        if (_updates[layer] is not null)
            throw new InvalidOperationException($"Layer '{Layout.Layers[layer].Name}' is already being updated.");
    }

    /// <summary>Applies the optimizer to one layer now, on the calling thread.</summary>
    private void Update(int layer, long step, long optimizerStep, float gradientFactor)
    {
        var grads = _gradsOf[layer]!;
        if (grads.Single is { } single)
        {
            Update(layer, step, optimizerStep, gradientFactor, single.Span);
            return;
        }
        // 16-bit gradients are widened as the optimizer loads them, and the factor applied to the widened value in FP32.
        var format = _precision == Precision.Bf16 ? GradFormat.Bf16 : GradFormat.Half;
        Apply<ushort>(layer, step, optimizerStep, grads.Bits16!.Span, format, gradientFactor);
    }

    /// <summary>Applies the optimizer to one layer now, on the calling thread, from FP32 <paramref name="grads"/> (scaled in place first).</summary>
    private void Update(int layer, long step, long optimizerStep, float gradientFactor, Span<float> grads)
    {
        if (gradientFactor != 1f)
            Scale(grads, gradientFactor);
        Apply<float>(layer, step, optimizerStep, grads, GradFormat.Single, 1f);
    }

    /// <summary>
    /// One layer's update: each tensor stepped from <paramref name="grads"/> (of <paramref name="format"/>, times
    /// <paramref name="gradientFactor"/> as loaded), writing the 16-bit copy in the same pass at 16-bit precision.
    /// </summary>
    private void Apply<TGrad>(int layer, long step, long optimizerStep, ReadOnlySpan<TGrad> grads, GradFormat format, float gradientFactor)
        where TGrad : unmanaged
    {
        var lr = Schedule.At(step);
        var t = checked((int)optimizerStep);
        var weights = _weights[layer].Span;
        var copy = _precision.Is16Bit() ? _weights16[layer].Span : Span<ushort>.Empty;
        var copyIsBf16 = _precision == Precision.Bf16;
        if (_statePrecision == StatePrecision.Bf16)
        {
            UpdateBf16(layer, t, lr, weights, grads, format, gradientFactor, copy, copyIsBf16);
            return;
        }
        var spp = _optimizer.StateFloatsPerParam;
        var state = _state[layer].AsSpan();
        foreach (var slot in Layout.Layers[layer].Tensors)
        {
            var offset = (int)slot.Offset;
            var length = (int)slot.Length;
            _core.Step(weights.Slice(offset, length), grads.Slice(offset, length), format, gradientFactor, state.Slice(spp * offset, spp * length),
                copy.IsEmpty ? copy : copy.Slice(offset, length), copyIsBf16, t, lr * slot.LearningRateScale, slot.Decay);
        }
    }

    /// <summary>Elements of a tensor widened to FP32 at once in a BF16-state update (two such buffers per update in flight).</summary>
    private const int Bf16Chunk = 1 << 20;

    /// <summary>
    /// AdamW with BF16 moments: each chunk of a tensor's m and v is widened to FP32 (exact), stepped by the same
    /// optimizer as FP32 state (AdamW is element-wise, so chunking changes nothing), and narrowed back with stochastic
    /// rounding keyed by (layer, step, element).
    /// </summary>
    private void UpdateBf16<TGrad>(int layer, int t, float lr, Span<float> weights, ReadOnlySpan<TGrad> grads, GradFormat format, float gradientFactor,
        Span<ushort> copy, bool copyIsBf16) where TGrad : unmanaged
    {
        var state16 = _state16[layer];
        var length = Layout.Layers[layer].Length;
        if (_optimizer.StateFloatsPerParam != 2)
            throw new InvalidOperationException("BF16 state is laid out as AdamW's m and v.");
        var key = Kernels.DropoutKernels.Key(0x5354, t, layer, 0);
        var scratch = System.Buffers.ArrayPool<float>.Shared.Rent(2 * Math.Min(Bf16Chunk, (int)length));
        try
        {
            foreach (var slot in Layout.Layers[layer].Tensors)
            {
                for (long start = 0; start < slot.Length; start += Bf16Chunk)
                {
                    var n = (int)Math.Min(Bf16Chunk, slot.Length - start);
                    var offset = (int)(slot.Offset + start);
                    // The host layout of FP32 state, per tensor: its m, then its v.
                    var mAt = (int)(2 * slot.Offset + start);
                    var vAt = (int)(2 * slot.Offset + slot.Length + start);
                    var m = state16.AsSpan(mAt, n);
                    var v = state16.AsSpan(vAt, n);
                    var chunk = scratch.AsSpan(0, 2 * n);
                    Bf16State.Widen(m, chunk[..n]);
                    Bf16State.Widen(v, chunk[n..]);
                    _core.Step(weights.Slice(offset, n), grads.Slice(offset, n), format, gradientFactor, chunk,
                        copy.IsEmpty ? copy : copy.Slice(offset, n), copyIsBf16, t, lr * slot.LearningRateScale, slot.Decay);
                    Bf16State.RoundStochastic(chunk[..n], m, key, mAt);
                    Bf16State.RoundStochastic(chunk[n..], v, key, vAt);
                }
            }
        }
        finally
        {
            System.Buffers.ArrayPool<float>.Shared.Return(scratch);
        }
    }

    /// <summary><c>x *= factor</c> element by element (one IEEE multiply each, as the device's scale kernel does).</summary>
    private static void Scale(Span<float> x, float factor)
    {
        var v = new System.Numerics.Vector<float>(factor);
        var w = System.Numerics.Vector<float>.Count;
        var i = 0;
        for (; i + w <= x.Length; i += w)
            (new System.Numerics.Vector<float>(x.Slice(i, w)) * v).CopyTo(x.Slice(i, w));
        for (; i < x.Length; i++)
            x[i] *= factor;
    }

    /// <summary>Blocks until layer <paramref name="layer"/>'s pending update (if any) is done; rethrows its failure.</summary>
    public void WaitForUpdate(int layer)
    {
        if (_reducer is not null)
        {
            long ignored = 0;
            _reducer.Wait(layer, ref ignored);
            return;
        }
        var task = _updates[layer];
        if (task is null)
            return;
        try
        {
            task.GetAwaiter().GetResult();
        }
        finally
        {
            _updates[layer] = null;
            _gradsOf[layer] = null;
            var slot = _slotOfLayer[layer];
            if (slot >= 0)
            {
                _slotOwner[slot] = -1;
                _slotOfLayer[layer] = -1;
            }
        }
    }

    /// <summary>Blocks until every pending update is done.</summary>
    public void WaitAll()
    {
        for (var i = 0; i < _updates.Length; i++)
            WaitForUpdate(i);
    }

    /// <summary>Marks one optimizer step as complete (after the executor has begun every layer's update).</summary>
    public void CompleteStep()
    {
        if (_root is null) StepsDone++; // a replica's step is the root's, counted once by the data-parallel executor
    }

    /// <summary>A copy of the master weights, after pending updates finish.</summary>
    public float[][] SnapshotWeights()
    {
        if (_root is not null)
            return _root.SnapshotWeights();
        WaitAll();
        return _weights.Select(w => w.Span.ToArray()).ToArray();
    }

    /// <summary>
    /// The optimizer state for a checkpoint, after pending updates finish. <paramref name="deviceState"/>
    /// supplies the state of the layers updated on the device, in the host layout.
    /// </summary>
    /// <remarks>
    /// With the optimizer sharded over ranks every rank must call this at the same point (it all-gathers the shards), and
    /// every rank receives the full state, so a checkpoint written from any rank resumes on any rank count.
    /// </remarks>
    public TrainingState SnapshotState(IReadOnlyDictionary<string, string>? metadata = null, Func<int, float[]>? deviceState = null)
    {
        if (_root is not null)
            return _root.SnapshotState(metadata, deviceState);
        WaitAll();
        if (_parallel is { ShardOptimizer: true })
            return new TrainingState(StepsDone, OptimizerName(Settings.Kind), _optimizer.StateFloatsPerParam,
                _reducer!.GatherState(_optimizer.StateFloatsPerParam, i => _state[i]), metadata ?? new Dictionary<string, string>());
        var states = new float[_state.Length][];
        for (var i = 0; i < states.Length; i++)
        {
            if (!_onDevice[i])
                states[i] = _statePrecision == StatePrecision.Bf16 ? _state16[i].Select(Bf16State.Widen).ToArray() : (float[])_state[i].Clone();
            else
                states[i] = deviceState?.Invoke(i)
                    ?? throw new InvalidOperationException($"Layer '{Layout.Layers[i].Name}' is updated on the device; its state must come from there.");
        }
        return new TrainingState(StepsDone, OptimizerName(Settings.Kind), _optimizer.StateFloatsPerParam,
            states, metadata ?? new Dictionary<string, string>());
    }

    /// <summary>
    /// Enqueues the copy of a device-updated layer's current weights from <paramref name="source"/> into
    /// the server's host copy, so snapshots and checkpoints see them (the server never updates them itself). Always FP32
    /// (the executor keeps a device-updated layer's FP32 masters on the device). At 16-bit precision the layer's 16-bit
    /// copy is refreshed lazily: the next <see cref="EnqueueFetch{T}"/> of the layer synchronizes
    /// <paramref name="copyStream"/> and rounds the stored masters before uploading, so a store costs nothing extra when
    /// the layer's copy is never fetched.
    /// </summary>
    public void EnqueueStoreWeights(int layer, AcceleratorStream copyStream, ArrayView<float> source)
    {
        if (!_onDevice[layer])
            throw new InvalidOperationException($"Layer '{Layout.Layers[layer].Name}' is updated on the host; its weights are the server's own.");
        _weights[layer].CopyFromDeviceAsync(copyStream, source.SubView(0, Layout.Layers[layer].Length));
        if (_precision.Is16Bit())
            _staleCopy[layer] = copyStream;
    }

    /// <summary>The master weights of one layer (read-only use; wait for its update first).</summary>
    public ReadOnlySpan<float> Weights(int layer)
    {
        WaitForUpdate(layer);
        return _weights[layer].Span;
    }

    /// <inheritdoc/>
    public void Dispose()
    {
        if (_root is not null)
            return; // a replica view owns nothing
        _reducer?.Dispose();
        try { WaitAll(); } catch (Exception) { /* disposal must release pinned memory regardless */ }
        foreach (var w in _weights) w.Dispose();
        foreach (var w in _weights16) w.Dispose();
        foreach (var g in _gradSlots) g.Dispose();
        foreach (var g in _ownGrads) g?.Dispose();
    }

    /// <summary>One pinned gradient buffer: FP32, or 2-byte elements (BF16 or FP16 bits) at 16-bit precision.</summary>
    private sealed class GradBuffer : IDisposable
    {
        public GradBuffer(Backend backend, long length, Precision precision)
        {
            if (precision.Is16Bit())
                Bits16 = backend.AllocatePinned<ushort>(length);
            else
                Single = backend.AllocatePinned<float>(length);
            Bytes = length * precision.ElementSize();
        }

        /// <summary>The FP32 buffer, or null.</summary>
        public PinnedHostBuffer<float>? Single { get; }

        /// <summary>The 16-bit buffer, or null.</summary>
        public PinnedHostBuffer<ushort>? Bits16 { get; }

        /// <summary>Host bytes.</summary>
        public long Bytes { get; }

        /// <summary>Enqueues the copy of <paramref name="length"/> gradients of <paramref name="source"/> (of the buffer's element size) into the buffer.</summary>
        public void CopyFromDevice<T>(AcceleratorStream stream, ArrayView<T> source, long length) where T : unmanaged
        {
            if (Single is { } single)
                single.CopyFromDeviceAsync(stream, source.Cast<float>().SubView(0, length));
            else
                Bits16!.CopyFromDeviceAsync(stream, source.Cast<ushort>().SubView(0, length));
        }

        public void Dispose()
        {
            Single?.Dispose();
            Bits16?.Dispose();
        }
    }
}
