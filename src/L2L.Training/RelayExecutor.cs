// L2L relay execution: one layer on the device at a time, run across every micro-batch before the next layer.
using ILGPU;
using ILGPU.Runtime;
using L2L.Backends;
using L2L.Model;
using L2L.Model.Device;

namespace L2L.Training;

/// <summary>The relay executor over storage type <typeparamref name="T"/> (float, Bf16 or Half); see <see cref="RelayExecutor"/>.</summary>
internal sealed class RelayCore<T> : IRelayCore where T : unmanaged
{
    private readonly Backend _backend;
    private readonly ModelLayout _layout;
    private readonly IModelLayers<T> _layers;
    private readonly Precision _precision;
    private readonly int _e; // bytes per stored element
    private readonly EagerParamServer _eps;
    private readonly MicroBatch _mb;
    private readonly int _microBatches;
    private readonly StashPlacement _placement;
    private readonly ResourceList _owned = new();
    private readonly DeviceBuffer<T>[] _paramSlots;
    private readonly DeviceBuffer<float>[] _gradSlots;
    private readonly DeviceBuffer<T> _embedding, _head, _blockOut;
    private readonly DeviceBuffer<float> _embeddingGrads, _headGrads;
    // 16-bit: the resident embedding's and head's FP32 masters (their optimizer's), and the staging of a layer's gradients narrowed for the bus.
    private readonly DeviceBuffer<float>? _embeddingMaster, _headMaster;
    private readonly DeviceBuffer<T>? _gradsOut;
    private readonly Backends.Ops.CastOps _cast;
    private readonly IBlockActivations _act;
    private readonly IModelScratch _scratch;
    private readonly DeviceBuffer<T>? _deviceStash, _deviceDx;
    private readonly PinnedHostBuffer<T>? _hostStash, _hostDx;
    private readonly DeviceBuffer<T>[] _inSlots = [], _outSlots = [], _dxSlots = [];
    private readonly Stash.CompressedStash? _compressed;
    private readonly MicroBatchInputs _inputs;
    private readonly PinnedHostBuffer<float> _loss;
    private readonly Update.DeviceLayerOptimizer? _residentOptimizer;
    private readonly Update.GradientControl _control;
    private readonly Update.GradientFault? _fault;
    private readonly Backends.Ops.ReduceOps _reduce;
    private readonly DeviceBuffer<float> _partials;
    // Sums of squares on the device: one per block gradient slot, then the embedding's and the head's. Each is
    // copied to the host with its layer's gradients (or kept, for device-updated layers), so device memory stays
    // independent of depth.
    private readonly DeviceBuffer<float> _sumSquares;
    private readonly PinnedHostBuffer<float> _sumSquaresHost;
    private readonly DropoutRates _dropout;
    private readonly Update.LayerSelection _selection;
    private readonly long _seed;
    private long _step;
    private long _stashBytes, _dxBytes, _normBytes, _lossBytes;
    private double _copyWait;

    /// <summary>Creates the executor and allocates every device buffer it will use.</summary>
    /// <param name="backend">The device.</param>
    /// <param name="eps">The param server holding the model (owned by the caller).</param>
    /// <param name="microBatch">The shape of one micro-batch.</param>
    /// <param name="microBatches">U, the number of micro-batches per minibatch.</param>
    /// <param name="placement">Where the stash and boundary gradients live.</param>
    /// <param name="resume">The checkpoint state, for the layers the server has the device update (<see cref="EagerParamServer.IsDeviceUpdated"/>).</param>
    /// <param name="control">Clipping and loss scaling (default: none); global clipping and loss scaling need a deferred-mode server.</param>
    /// <param name="fault">A test hook that poisons one layer's gradient at one step.</param>
    /// <param name="dropout">Dropout rates (default none), masks keyed by (<paramref name="seed"/>, step, layer, micro-batch, element).</param>
    /// <param name="seed">The run's seed, for the dropout masks.</param>
    /// <param name="codec">How the stash is stored (default: FP32, exact).</param>
    /// <param name="selection">Layer drop and frozen layers (default: every layer runs and trains).</param>
    public RelayCore(Backend backend, EagerParamServer eps, MicroBatch microBatch, int microBatches, StashPlacement placement,
        TrainingState? resume, Update.GradientControl? control, Update.GradientFault? fault,
        DropoutRates? dropout, long seed, Update.LayerSelection? selection, Stash.StashCodecSettings? codec)
    {
        _precision = Precisions.Of<T>();
        _e = _precision.ElementSize();
        if (eps.Precision != _precision)
            throw new ArgumentException($"The param server keeps {eps.Precision.Name()} device copies; this executor runs in {_precision.Name()}.");
        ArgumentOutOfRangeException.ThrowIfLessThan(microBatches, 1);
        microBatch.Validate();
        _backend = backend;
        _eps = eps;
        _layout = eps.Layout;
        _mb = microBatch;
        _microBatches = microBatches;
        _placement = placement;
        _control = control ?? new Update.GradientControl(null, Update.ClipMode.Global, Update.LossScaleMode.None, _layout.Layers.Count, resume);
        _selection = selection ?? Update.LayerSelection.All(_layout);
        _fault = fault;
        _dropout = dropout ?? DropoutRates.None;
        _seed = seed;
        if (_control.NeedsGlobalNorm && eps.Mode != Update.UpdateMode.Deferred)
            throw new ArgumentException("Global gradient clipping and dynamic loss scaling need deferred updates (the param server's --update-mode deferred).");
        _reduce = backend.Get<Backends.Ops.ReduceOps>();
        _cast = backend.Get<Backends.Ops.CastOps>();
        try
        {
            _layers = Models.CreateLayers<T>(backend, _layout);
            // Every buffer's length comes from the plan `l2l plan` prints, so what it predicts is what is allocated.
            var planned = new Planning.PlanSettings(_layout.Config, microBatch.Batch, microBatches, microBatch.SeqLen, ExecutorKind.Relay, placement,
                codec ?? new Stash.StashCodecSettings(), eps.Settings.Kind, ResidentOnDevice ? Update.UpdateLocation.Device : Update.UpdateLocation.Host,
                eps.Mode, Optim.StatePrecision.Fp32, DeviceShape.Of(backend.Accelerator), Precision: _precision);
            var device = Planning.Planner.RelayDevice(planned, _layout);
            var pinned = Planning.Planner.RelayExecutorHost(planned, _layout);
            DeviceBuffer<float> F(string name) => Track(backend.Allocate<float>(device.Named(name)));
            DeviceBuffer<T> S(string name) => Track(backend.Allocate<T>(device.Named(name)));
            PinnedHostBuffer<float> P(string name) => Track(backend.AllocatePinned<float>(pinned.Named(name).Length));
            PinnedHostBuffer<T> PS(string name) => Track(backend.AllocatePinned<T>(pinned.Named(name).Length));
            _partials = F("grad-norm.partials");
            _sumSquares = F("grad-norm.sums");
            _sumSquaresHost = P("host.grad-norm.sums");
            _paramSlots = [S("block-slot.0"), S("block-slot.1")];
            _gradSlots = [F("block-grads.0"), F("block-grads.1")];
            _embedding = S("embedding");
            _embeddingGrads = F("embedding.grads");
            _head = S("head");
            _headGrads = F("head.grads");
            if (_precision.Is16Bit())
            {
                _gradsOut = S("grads-out");
                if (ResidentOnDevice)
                {
                    _embeddingMaster = F("embedding.master");
                    _headMaster = F("head.master");
                }
            }
            _act = Track(_layers.CreateActivations(backend, microBatch));
            _scratch = Track(_layers.CreateScratch(backend, microBatch));
            _blockOut = S("block-out");
            var a = microBatch.ActivationLength;
            var layers = _layout.Blocks.Count;
            if (codec is { Enabled: true })
            {
                // Only encoded inputs are stashed (on the device, or on the host through two encoded slots). The forward
                // must read exact inputs, so the running layer's activations of all U micro-batches stay on the device, in
                // the boundary-gradient buffer, which the backward needs only later; the boundary gradients then stay there too.
                _compressed = Track(new Stash.CompressedStash(backend, codec, placement, layers, microBatches, a, resume?.Metadata, _precision));
                _deviceDx = S("boundary-grads");
            }
            else if (placement == StashPlacement.Device)
            {
                _deviceStash = S("stash");
                _deviceDx = S("boundary-grads");
            }
            else
            {
                _hostStash = PS("host.stash");
                _hostDx = PS("host.boundary-grads");
                _inSlots = [S("stash-in.0"), S("stash-in.1")];
                _outSlots = [S("stash-out.0"), S("stash-out.1")];
                _dxSlots = [S("boundary-grads.0"), S("boundary-grads.1")];
            }
            _inputs = Track(new MicroBatchInputs(backend, microBatch, microBatches, _layers.Inputs));
            _loss = P("host.loss");
            if (ResidentOnDevice)
            {
                if (!eps.IsDeviceUpdated(HeadIndex))
                    throw new ArgumentException("The embedding and head are updated on the device together, or both on the host.");
                // They stay on the device for the whole run: uploaded once, updated there, written back for snapshots.
                _residentOptimizer = Track(new Update.DeviceLayerOptimizer(backend, eps.Settings, eps.Schedule, [_layout.Embedding, _layout.Head], resume));
                if (_embeddingMaster is null)
                {
                    eps.EnqueueFetch(EmbeddingIndex, backend.CopyStream, _embedding.View);
                    eps.EnqueueFetch(HeadIndex, backend.CopyStream, _head.View);
                    backend.CopyStream.Synchronize();
                }
                else
                {
                    // 16-bit: their FP32 masters go up once (their optimizer keeps them on the device) and the working copies are narrowed from them.
                    var cs = backend.ComputeStream;
                    _embeddingMaster.View.CopyFromCPU(cs, eps.Weights(EmbeddingIndex).ToArray());
                    _headMaster!.View.CopyFromCPU(cs, eps.Weights(HeadIndex).ToArray());
                    _cast.FromFloat(cs, _embedding.View, _embeddingMaster.View);
                    _cast.FromFloat(cs, _head.View, _headMaster.View);
                    cs.Synchronize();
                }
            }
        }
        catch
        {
            Dispose();
            throw;
        }
    }

    /// <summary>
    /// Data parallel: the labelled targets of the whole global minibatch (every device and rank), which scales this
    /// replica's loss gradient and loss; null: this executor's own minibatch.
    /// </summary>
    public long? LabelledTotal { get; set; }

    /// <summary>Data parallel: the global index of this replica's first micro-batch, so dropout masks match one device's.</summary>
    public int MicroBatchOffset { get; set; }

    /// <summary>Whether the embedding and head layers stay on the device with their optimizer there.</summary>
    private bool ResidentOnDevice => _eps.IsDeviceUpdated(EmbeddingIndex);

    private R Track<R>(R resource) where R : IDisposable => _owned.Add(resource);

    /// <inheritdoc/>
    public long StepsDone => _eps.StepsDone;

    private int EmbeddingIndex => _layout.Embedding.Index;
    private int HeadIndex => _layout.Head.Index;
    private int BlockIndex(int l) => _layout.Blocks[l].Index;
    private long A => _mb.ActivationLength;
    private int L => _layout.Blocks.Count;
    private int U => _microBatches;

    private ArrayView<T> StashView(int level, int u) => _deviceStash!.Slice((level * (long)U + u) * A, A);
    // With a codec the forward reads and writes exact activations (X), and only their encodings are stashed.
    private ArrayView<T> X(int u) => _deviceDx!.Slice(u * A, A);
    private ArrayView<T> In(int level, int u, int slot) =>
        _compressed is not null ? X(u) : _placement == StashPlacement.Device ? StashView(level, u) : _inSlots[slot].View;
    private ArrayView<T> Out(int level, int u, int slot) =>
        _compressed is not null ? (level == 0 ? X(u) : _blockOut.View) : _placement == StashPlacement.Device ? StashView(level, u) : _outSlots[slot].View;
    private ArrayView<T> Dx(int u, int slot) => _compressed is not null || _placement == StashPlacement.Device ? X(u) : _dxSlots[slot].View;

    /// <summary>
    /// After the layer below wrote <see cref="Out"/>(level): with a codec, enqueues its encode into the stash
    /// (keyed by step, level and micro-batch) and moves the exact values to X(u), the next layer's input.
    /// </summary>
    private void Stashed(long step, int level, int u, int slot)
    {
        if (_compressed is null) return;
        var s = _backend.ComputeStream;
        var produced = Out(level, u, slot);
        _compressed.Encode(s, step, level, u, slot, produced);
        if (level > 0) produced.CopyTo(s, X(u));
    }

    /// <summary>Whether the forward fetches its inputs from the host stash (not with a codec: it reads exact inputs kept on the device).</summary>
    private bool HostInputs => _placement == StashPlacement.Host && _compressed is null;

    /// <summary>The stashed input of level <paramref name="level"/> for the backward's recomputation: decoded into a workspace buffer with a codec.</summary>
    private ArrayView<T> Restore(int level, int u, int slot) =>
        _compressed is not null ? _compressed.Decode<T>(_backend.ComputeStream, level, u, slot) : In(level, u, slot);

    private void FetchStash(int level, int u, int slot)
    {
        if (_compressed is not null)
        {
            _stashBytes += _compressed.Fetch(_backend.CopyStream, level, u, slot);
            return;
        }
        _hostStash!.CopyToDeviceAsync(_backend.CopyStream, _inSlots[slot].View, (level * (long)U + u) * A, A);
        _stashBytes += A * _e;
    }

    private void StoreStash(int level, int u, int slot)
    {
        if (_compressed is not null)
        {
            _stashBytes += _compressed.Store(_backend.CopyStream, level, u, slot);
            return;
        }
        _hostStash!.CopyFromDeviceAsync(_backend.CopyStream, _outSlots[slot].View, (level * (long)U + u) * A, A);
        _stashBytes += A * _e;
    }

    private void FetchDx(int u, int slot)
    {
        if (_compressed is not null) return; // the boundary gradients stay on the device
        _hostDx!.CopyToDeviceAsync(_backend.CopyStream, _dxSlots[slot].View, u * A, A);
        _dxBytes += A * _e;
    }

    private void StoreDx(int u, int slot)
    {
        if (_compressed is not null) return;
        _hostDx!.CopyFromDeviceAsync(_backend.CopyStream, _dxSlots[slot].View, u * A, A);
        _dxBytes += A * _e;
    }

    /// <summary>Blocks until the copy stream is idle, counting the time as waiting on transfers.</summary>
    private void WaitForCopies()
    {
        var start = System.Diagnostics.Stopwatch.GetTimestamp();
        _backend.CopyStream.Synchronize();
        _copyWait += System.Diagnostics.Stopwatch.GetElapsedTime(start).TotalSeconds;
    }

    private void UploadInputs(int u) => _inputs.UploadInputs(_backend.ComputeStream, u);
    private void UploadTargets(int u) => _inputs.UploadTargets(_backend.ComputeStream, u);

    /// <summary>Blocks that read the inputs (a padding mask) get micro-batch u's uploaded before they run.</summary>
    private void UploadBlockInputs(int u)
    {
        if (_layers.BlocksReadInputs) UploadInputs(u);
    }

    /// <summary>
    /// Runs <paramref name="compute"/> for every micro-batch. With a host stash, <paramref name="fetch"/>
    /// for micro-batch u+1 and <paramref name="store"/> for u-1 run on the copy stream while u computes,
    /// double-buffered through slots u % 2.
    /// </summary>
    private void ForEachMicroBatch(Action<int, int> compute, Action<int, int>? fetch, Action<int, int>? store)
    {
        // Every pass over micro-batch u (forward, recomputation, backward) keys its dropout masks the same way.
        void Compute(int u, int k)
        {
            _layers.SetDropout(_dropout.Any ? new DropoutContext(_dropout, _seed, _step, MicroBatchOffset + u) : null);
            compute(u, k);
        }

        if (_placement == StashPlacement.Device || (fetch is null && store is null))
        {
            for (var u = 0; u < U; u++)
                Compute(u, 0);
            return;
        }
        var s = _backend.ComputeStream;
        var c = _backend.CopyStream;
        fetch?.Invoke(0, 0);
        for (var u = 0; u < U; u++)
        {
            WaitForCopies(); // fetch(u) landed; store(u-2) done, so slot u % 2 may be overwritten
            s.Synchronize(); // compute(u-1) done, so its slots may be stored or refilled
            if (u > 0) store?.Invoke(u - 1, (u - 1) % 2);
            if (u + 1 < U) fetch?.Invoke(u + 1, (u + 1) % 2);
            Compute(u, u % 2);
        }
        s.Synchronize();
        store?.Invoke(U - 1, (U - 1) % 2);
        WaitForCopies();
    }

    /// <inheritdoc/>
    public StepResult Step(long step, ReadOnlySpan<int> inputs, ReadOnlySpan<int> targets, ReadOnlySpan<int> tokenTypes = default)
    {
        var tokens = U * _mb.Tokens;
        if (inputs.Length != tokens || targets.Length != tokens)
            throw new ArgumentException($"Expected {tokens} input and target tokens ({U} micro-batches of {_mb.Batch}x{_mb.SeqLen}).");
        var s = _backend.ComputeStream;
        var c = _backend.CopyStream;
        var host = _placement == StashPlacement.Host;
        _step = step;
        var busBefore = Traffic;
        var updateWaitBefore = _eps.UpdateWaitSeconds;
        _copyWait = 0;
        // The loss is the mean over the minibatch's labelled targets, so every micro-batch's gradient is scaled by the same 1 / count.
        var local = _inputs.Load(inputs, targets, tokenTypes);
        var labelled = Math.Max(1, LabelledTotal ?? local);
        // Under dynamic loss scaling the loss gradient is multiplied by the scale (a power of two, so exactly).
        var lossScale = _control.LossScale / labelled;
        var deferred = _eps.Mode == Update.UpdateMode.Deferred;
        // The blocks that run this step (layer drop) in order; position j has stash level j and parameter slot j % 2.
        var active = _selection.ActiveBlocks(step);
        var n = active.Length;
        int Block(int j) => BlockIndex(active[j]);
        bool Trains(int layer) => !_selection.IsFrozen(layer);
        _compressed?.BeginStep(s, step, n);
        _sumSquaresHost.Span.Clear(); // layers without gradients this step add nothing to the norm

        // Forward. The embedding and head layers stay on the device for the whole step (the head's decoder is tied to the token embedding).
        _scratch.LossTotal.View.MemSetToZero(s);
        _embeddingGrads.View.MemSetToZero(s);
        _headGrads.View.MemSetToZero(s);
        if (!ResidentOnDevice)
        {
            _eps.EnqueueFetch(EmbeddingIndex, c, _embedding.View);
            _eps.EnqueueFetch(HeadIndex, c, _head.View);
        }
        // As below: with a device stash the embedding runs while block 0's host update (the first deferred one) finishes.
        var fetchFirstAfter = !host && _eps.IsUpdatePending(Block(0));
        if (!fetchFirstAfter) _eps.EnqueueFetch(Block(0), c, _paramSlots[0].View);
        WaitForCopies();
        ForEachMicroBatch(
            (u, k) => { UploadInputs(u); _layers.EmbeddingForward(s, _mb, _embedding.View, _inputs, Out(0, u, k), _scratch); Stashed(step, 0, u, k); },
            null,
            host ? (u, k) => StoreStash(0, u, k) : null);
        if (fetchFirstAfter) _eps.EnqueueFetch(Block(0), c, _paramSlots[0].View);

        for (var j = 0; j < n; j++)
        {
            s.Synchronize();
            WaitForCopies();
            // The prefetch of the next block waits for its host update. When that update is still running and the
            // stash is on the device, this block's work is enqueued first, so the device computes while the host waits.
            var fetchAfter = !host && j + 1 < n && _eps.IsUpdatePending(Block(j + 1));
            if (j + 1 < n && !fetchAfter) _eps.EnqueueFetch(Block(j + 1), c, _paramSlots[(j + 1) % 2].View);
            var p = _paramSlots[j % 2].View;
            var layer = _layout.Blocks[active[j]];
            var level = j;
            if (j < n - 1)
            {
                ForEachMicroBatch(
                    (u, k) =>
                    {
                        UploadBlockInputs(u);
                        _layers.BlockForward(s, _mb, layer, p, In(level, u, k), Out(level + 1, u, k), _act, _inputs);
                        Stashed(step, level + 1, u, k);
                    },
                    HostInputs ? (u, k) => FetchStash(level, u, k) : null,
                    host ? (u, k) => StoreStash(level + 1, u, k) : null);
                if (fetchAfter) _eps.EnqueueFetch(Block(j + 1), c, _paramSlots[(j + 1) % 2].View);
            }
            else
            {
                // The last block feeds the head directly, which turns the loss into the first boundary gradient.
                ForEachMicroBatch(
                    (u, k) =>
                    {
                        UploadBlockInputs(u);
                        _layers.BlockForward(s, _mb, layer, p, In(level, u, k), _blockOut.View, _act, _inputs);
                        UploadTargets(u);
                        _layers.HeadForwardBackward(s, _mb, _head.View, _headGrads.View, _embedding.View, _embeddingGrads.View,
                            _blockOut.View, _inputs, Dx(u, k), _scratch, lossScale);
                    },
                    HostInputs ? (u, k) => FetchStash(level, u, k) : null,
                    host ? (u, k) => StoreDx(u, k) : null);
            }
        }

        // Backward, top block down to the lowest trainable layer. Each trainable layer's gradients go to the host as
        // soon as they are complete, with their sum of squares (reduced on the device); in eager mode the param server
        // updates the layer while the device works on the layers below, in deferred mode it keeps them until the
        // global norm is known. A frozen block above a trainable one still passes the boundary gradient down.
        var embeddingTrains = Trains(EmbeddingIndex);
        var lowest = embeddingTrains ? 0 : Enumerable.Range(0, n).Where(j => Trains(Block(j))).DefaultIfEmpty(n).First();
        var backwardLayers = 0;
        var pending = new List<int>();
        s.Synchronize();
        WaitForCopies();
        if (Trains(HeadIndex))
        {
            ReduceGradients(step, HeadIndex, _headGrads.View, HeadSumSlot);
            if (ResidentOnDevice)
            {
                if (!deferred)
                    StepResident(_layout.Head, _head, _headMaster, _headGrads.View, HeadSumSlot, step, _control.Unscale);
            }
            else
            {
                s.Synchronize();
                SendGradients(HeadIndex, _headGrads.View, HeadSumSlot);
                pending.Add(HeadIndex);
            }
        }
        for (var j = n - 1; j >= lowest; j--)
        {
            s.Synchronize();
            WaitForCopies();
            BeginEager(pending, step);
            if (j + 1 < n && Trains(Block(j + 1)))
            {
                SendGradients(Block(j + 1), _gradSlots[(j + 1) % 2].View, (j + 1) % 2);
                pending.Add(Block(j + 1));
            }
            // The block below the top one is still in its slot from the forward pass; every lower one is fetched again.
            if (j - 1 >= lowest && j != n - 1) _eps.EnqueueFetch(Block(j - 1), c, _paramSlots[(j - 1) % 2].View);
            var p = _paramSlots[j % 2].View;
            var g = _gradSlots[j % 2].View;
            var layer = _layout.Blocks[active[j]];
            var level = j;
            var trains = Trains(layer.Index); // a frozen block here only passes the gradient down
            g.MemSetToZero(s);
            ForEachMicroBatch(
                (u, k) =>
                {
                    UploadBlockInputs(u);
                    var x = Restore(level, u, k);
                    _compressed?.ObserveGradient(s, level, u, Dx(u, k), _partials.View);
                    _layers.BlockForward(s, _mb, layer, p, x, _blockOut.View, _act, _inputs);
                    _layers.BlockBackward(s, _mb, layer, p, g, x, Dx(u, k), _act, _scratch, _inputs, trains);
                },
                host ? (u, k) => { FetchStash(level, u, k); FetchDx(u, k); } : null,
                host ? (u, k) => StoreDx(u, k) : null);
            backwardLayers++;
            if (trains)
                ReduceGradients(step, layer.Index, g, j % 2);
        }
        s.Synchronize();
        WaitForCopies();
        BeginEager(pending, step);
        if (lowest < n && Trains(Block(lowest)))
        {
            SendGradients(Block(lowest), _gradSlots[lowest % 2].View, lowest % 2);
            pending.Add(Block(lowest));
        }

        if (embeddingTrains)
        {
            // The embedding's gradient from block 0's input gradient (recomputing the embedding's forward
            // internals per micro-batch where it has any), added to the head's contribution to the tied token embedding.
            ForEachMicroBatch(
                (u, k) =>
                {
                    UploadInputs(u);
                    _inputs.UploadPlans(s, u);
                    _layers.EmbeddingBackward(s, _mb, _embedding.View, _embeddingGrads.View, _inputs, Dx(u, k), _scratch);
                },
                host ? (u, k) => FetchDx(u, k) : null,
                null);
            backwardLayers++;
            ReduceGradients(step, EmbeddingIndex, _embeddingGrads.View, EmbeddingSumSlot);
        }
        s.Synchronize();
        WaitForCopies();
        BeginEager(pending, step);
        _loss.CopyFromDeviceAsync(c, _scratch.LossTotal.View);
        _lossBytes += sizeof(float);
        if (ResidentOnDevice)
        {
            if (embeddingTrains) _sumSquaresHost.CopyFromDeviceAsync(c, _sumSquares.View.SubView(EmbeddingSumSlot, 1), EmbeddingIndex, 1);
            if (Trains(HeadIndex)) _sumSquaresHost.CopyFromDeviceAsync(c, _sumSquares.View.SubView(HeadSumSlot, 1), HeadIndex, 1);
            _normBytes += sizeof(float) * ((embeddingTrains ? 1 : 0) + (Trains(HeadIndex) ? 1 : 0));
        }
        else if (embeddingTrains)
        {
            SendGradients(EmbeddingIndex, _embeddingGrads.View, EmbeddingSumSlot);
        }
        WaitForCopies();
        if (!deferred && embeddingTrains)
        {
            if (ResidentOnDevice)
                StepResident(_layout.Embedding, _embedding, _embeddingMaster, _embeddingGrads.View, EmbeddingSumSlot, step, _control.Unscale);
            else
                BeginEager([EmbeddingIndex], step);
        }
        var sums = _sumSquaresHost.Span;
        double gradNorm;
        var skipped = false;
        if (deferred)
        {
            // The global norm is known: update in forward order. The device-updated embedding goes first on the
            // compute stream, the host-updated layers one after another on host threads, the head last; the next
            // step's fetch of a layer waits only for that layer.
            var decision = _control.Decide(sums);
            gradNorm = decision.GradNorm;
            skipped = decision.Skip;
            // Without a dynamic scale the layers whose gradients overflowed are reported and not updated; under global
            // clipping the norm itself is then not finite, so no layer is (the step is skipped).
            var overflowed = new HashSet<int>();
            if (_control.Scaler is null && _eps.Parallel is not { IsParallel: true })
            {
                for (var i = 0; i < _layout.Layers.Count; i++)
                    if (_control.LayerOverflowed(sums[i])) overflowed.Add(i);
                if (overflowed.Count > 0 && _control.ClipGradNorm is not null && _control.ClipMode == Update.ClipMode.Global)
                    skipped = true;
                foreach (var i in overflowed) _control.ReportOverflow(i);
            }
            if (skipped)
            {
                _eps.DiscardGradients();
            }
            else
            {
                var ran = new HashSet<int>(active.Select(BlockIndex)) { EmbeddingIndex, HeadIndex };
                var hostLayers = _layout.Layers.Select(x => x.Index).Where(i => !_eps.IsDeviceUpdated(i) && ran.Contains(i) && Trains(i) && !overflowed.Contains(i)).ToArray();
                foreach (var i in overflowed.Where(i => !_eps.IsDeviceUpdated(i) && ran.Contains(i) && Trains(i)))
                    _eps.DiscardGradients(i);
                if (ResidentOnDevice && embeddingTrains)
                    StepResident(_layout.Embedding, _embedding, _embeddingMaster, _embeddingGrads.View, EmbeddingSumSlot, step, decision.Factor);
                var squares = _sumSquaresHost;
                _eps.BeginUpdatesInOrder(hostLayers, step, _control.NextOptimizerStep, i => _control.LayerFactor(squares[i], decision.Factor));
                if (ResidentOnDevice && Trains(HeadIndex))
                    StepResident(_layout.Head, _head, _headMaster, _headGrads.View, HeadSumSlot, step, decision.Factor);
            }
        }
        else
        {
            gradNorm = _control.GlobalNorm(sums);
        }
        _eps.CompleteStep();
        _compressed?.EndStep(s);

        var loss = _loss.Span[0] / (double)labelled;
        if (!double.IsFinite(loss))
            throw new NonFiniteLossException(step, loss);
        var bus = Traffic - busBefore;
        var overflowedNames = _control.TakeOverflowedLayers().Order().Select(i => _layout.Layers[i].Name).ToArray();
        return new StepResult(loss, bus.Total, _copyWait, _eps.UpdateWaitSeconds - updateWaitBefore,
            gradNorm, skipped, _control.LossScale, _control.SkippedSteps, n, backwardLayers, BusBytesByKind: bus, StashBits: _compressed?.StepBits,
            OverflowedLayers: overflowedNames.Length > 0 ? overflowedNames : null);
    }

    private const int EmbeddingSumSlot = 2, HeadSumSlot = 3;

    /// <summary>The running totals of the bytes this executor and its param server have moved, by kind.</summary>
    private Planning.BusTraffic Traffic =>
        new(_eps.WeightBusBytes, _eps.GradientBusBytes, _stashBytes, _dxBytes, _inputs.UploadedBytes + _lossBytes + _normBytes);

    /// <summary>
    /// Enqueues the sum of squares of a layer's completed gradients into device slot <paramref name="sumSlot"/>
    /// (after the test hook's poisoning, if it targets this layer and step). In 16 bits a host-updated layer's sum is
    /// taken later, by <see cref="SendGradients"/>, from the narrowed gradients the host will apply.
    /// </summary>
    private void ReduceGradients(long step, int layer, ArrayView<float> grads, int sumSlot)
    {
        var s = _backend.ComputeStream;
        var length = _layout.Layers[layer].Length;
        if (_fault is { } f && f.Step == step && f.Layer == layer)
            _reduce.Scale(s, grads.SubView(0, 1), float.NaN);
        if (_gradsOut is null || _eps.IsDeviceUpdated(layer))
            _reduce.SumOfSquares(s, _sumSquares.View.SubView(sumSlot, 1), grads.SubView(0, length), _partials.View);
    }

    /// <summary>
    /// Enqueues a host-updated layer's gradients and their sum of squares to the param server (compute must be done). In
    /// 16 bits the FP32 gradients are first narrowed into the staging buffer (whose previous copy has landed: every call
    /// follows a wait for the copy stream), and the sum of squares is that of the narrowed values, so an FP16 overflow
    /// in the narrowing shows as a non-finite sum.
    /// </summary>
    private void SendGradients(int layer, ArrayView<float> grads, int sumSlot)
    {
        var length = _layout.Layers[layer].Length;
        if (_gradsOut is not null)
        {
            var s = _backend.ComputeStream;
            var narrowed = _gradsOut.View.SubView(0, length);
            _cast.FromFloat(s, narrowed, grads.SubView(0, length));
            _reduce.SumOfSquares(s, _sumSquares.View.SubView(sumSlot, 1), narrowed, _partials.View);
            s.Synchronize();
            _eps.EnqueueGradients(layer, _backend.CopyStream, narrowed);
        }
        else
        {
            _eps.EnqueueGradients(layer, _backend.CopyStream, grads);
        }
        _sumSquaresHost.CopyFromDeviceAsync(_backend.CopyStream, _sumSquares.View.SubView(sumSlot, 1), layer, 1);
        _normBytes += sizeof(float);
    }

    /// <summary>
    /// In eager mode, begins the updates of layers whose gradients (and sums of squares) have landed. A layer whose
    /// gradients hold an inf or NaN is not updated: its gradients are dropped and it is reported in the step's result.
    /// </summary>
    private void BeginEager(List<int> pending, long step)
    {
        if (_eps.Mode == Update.UpdateMode.Eager)
        {
            foreach (var index in pending)
            {
                var sum = _sumSquaresHost.Span[index];
                // (Data parallel leaves the check to a single process: an overflowed layer would have to be skipped on every replica alike.)
                if (_control.Scaler is null && _eps.Parallel is not { IsParallel: true } && _control.LayerOverflowed(sum))
                {
                    _eps.DiscardGradients(index);
                    _control.ReportOverflow(index);
                    continue;
                }
                _eps.BeginUpdate(index, step, _control.LayerFactor(sum, _control.Unscale), _control.NextOptimizerStep(index));
            }
        }
        pending.Clear();
    }

    /// <summary>Whether a resident layer's sum of squares is checked on the host before its device update.</summary>
    private bool CheckResident => _control.Scaler is null && _precision.Is16Bit();

    /// <summary>
    /// Enqueues the device update of a resident layer, its gradients first multiplied by <paramref name="factor"/>
    /// (and, under per-layer clipping, by its own clip coefficient, which needs its sum of squares on the host).
    /// In 16 bits the optimizer updates the FP32 <paramref name="master"/> and writes the working copy in the same pass;
    /// a layer whose gradients overflowed is then not updated, and reported.
    /// </summary>
    private void StepResident(LayerLayout layer, DeviceBuffer<T> working, DeviceBuffer<float>? master, ArrayView<float> grads, int sumSlot, long step, float factor)
    {
        var s = _backend.ComputeStream;
        var sum = 0f; // read only under per-layer clipping
        if ((_control.ClipGradNorm is not null && _control.ClipMode == Update.ClipMode.Layer) || CheckResident)
        {
            var one = new float[1];
            _sumSquares.View.SubView(sumSlot, 1).CopyToCPU(s, one);
            _normBytes += sizeof(float);
            s.Synchronize();
            sum = one[0];
            if (CheckResident && _control.LayerOverflowed(sum))
            {
                _control.ReportOverflow(layer.Index);
                return;
            }
        }
        factor = _control.LayerFactor(sum, factor);
        if (factor != 1f)
            _reduce.Scale(s, grads.SubView(0, layer.Length), factor);
        if (master is null)
            _residentOptimizer!.Step(s, layer, working.View.Cast<float>(), grads, step, _control.NextOptimizerStep(layer.Index));
        else
            _residentOptimizer!.Step(s, layer, master.View, grads, working.View, step, _control.NextOptimizerStep(layer.Index));
    }

    /// <inheritdoc/>
    public float[][] Weights()
    {
        StoreResidentWeights();
        return _eps.SnapshotWeights();
    }

    /// <inheritdoc/>
    public TrainingState State(IReadOnlyDictionary<string, string>? metadata = null) =>
        _eps.SnapshotState(WithStashState(metadata), i => _residentOptimizer!.State(_backend.ComputeStream, _layout.Layers[i]));

    // The adaptive stash codec's choice state travels in the checkpoint's metadata, so a resumed run continues with the same bits.
    private IReadOnlyDictionary<string, string>? WithStashState(IReadOnlyDictionary<string, string>? metadata)
    {
        if (_compressed is null) return metadata;
        var all = metadata is null ? new Dictionary<string, string>() : new Dictionary<string, string>(metadata);
        _compressed.SaveState(all);
        return all;
    }

    /// <summary>Copies the device-resident layers' current weights into the param server, for a snapshot.</summary>
    private void StoreResidentWeights()
    {
        if (!ResidentOnDevice)
            return;
        _backend.ComputeStream.Synchronize();
        _eps.EnqueueStoreWeights(EmbeddingIndex, _backend.CopyStream, _embeddingMaster?.View ?? _embedding.View.Cast<float>());
        _eps.EnqueueStoreWeights(HeadIndex, _backend.CopyStream, _headMaster?.View ?? _head.View.Cast<float>());
        _backend.CopyStream.Synchronize();
    }

    /// <inheritdoc/>
    public void Dispose()
    {
        try { _backend.Synchronize(); } catch (Exception) { /* release what we own regardless */ }
        _owned.Dispose();
    }
}

/// <summary>What <see cref="RelayExecutor"/> needs of its typed core.</summary>
internal interface IRelayCore : IExecutor
{
    long? LabelledTotal { get; set; }
    int MicroBatchOffset { get; set; }
}

/// <summary>
/// The relay executor. The eager param server holds the model on the host; the device holds two
/// block slots (the running layer and the prefetched next one), two gradient slots (the running
/// layer's and the previous layer's, still being copied out), the embedding and head layers, and
/// a workspace for one micro-batch. Each layer runs across all U micro-batches, so its weights
/// cross the bus once per pass. The backward pass recomputes each block from its stashed input.
/// With <see cref="StashPlacement.Host"/> the stash and the boundary gradients live in pinned host
/// memory and stream through two device slots each, so device memory does not depend on the
/// number of layers or micro-batches.
/// </summary>
/// <remarks>
/// Stream ordering: ILGPU cannot make one stream wait on another's event, so the host orders
/// them: before a slot is refilled on the copy stream the compute stream is synchronized, and
/// before compute uses a slot the copy stream is synchronized. Compute of one micro-batch or
/// layer still overlaps the transfers of the next.
/// <para>
/// With a 16-bit param server (<see cref="EagerParamServer.Precision"/> bf16 or fp16) the block slots, the embedding
/// and head working copies, the stash, the boundary gradients and the activations are 16-bit; the parameter
/// gradients accumulate in FP32 and are narrowed to 16 bits on the device just before they cross the bus. A resident
/// embedding and head keep their FP32 masters on the device with their optimizer, which writes the working copies.
/// </para>
/// </remarks>
public sealed class RelayExecutor : IExecutor
{
    private readonly IRelayCore _core;

    /// <summary>Creates the executor, in the param server's precision, and allocates every device buffer it will use.</summary>
    /// <param name="backend">The device.</param>
    /// <param name="eps">The param server holding the model (owned by the caller); its precision is the executor's.</param>
    /// <param name="microBatch">The shape of one micro-batch.</param>
    /// <param name="microBatches">U, the number of micro-batches per minibatch.</param>
    /// <param name="placement">Where the stash and boundary gradients live.</param>
    /// <param name="resume">The checkpoint state, for the layers the server has the device update (<see cref="EagerParamServer.IsDeviceUpdated"/>).</param>
    /// <param name="control">Clipping and loss scaling (default: none); global clipping and dynamic loss scaling need a deferred-mode server.</param>
    /// <param name="fault">A test hook that poisons one layer's gradient at one step.</param>
    /// <param name="dropout">Dropout rates (default none), masks keyed by (<paramref name="seed"/>, step, layer, micro-batch, element).</param>
    /// <param name="seed">The run's seed, for the dropout masks.</param>
    /// <param name="selection">Layer drop and frozen layers (default: every layer runs and trains).</param>
    /// <param name="codec">How the stash is stored (default: uncompressed, exact).</param>
    public RelayExecutor(Backend backend, EagerParamServer eps, MicroBatch microBatch, int microBatches, StashPlacement placement,
        TrainingState? resume = null, Update.GradientControl? control = null, Update.GradientFault? fault = null,
        DropoutRates? dropout = null, long seed = 0, Update.LayerSelection? selection = null, Stash.StashCodecSettings? codec = null)
    {
        _core = eps.Precision switch
        {
            Precision.Bf16 => new RelayCore<Kernels.Bf16>(backend, eps, microBatch, microBatches, placement, resume, control, fault, dropout, seed, selection, codec),
            Precision.Fp16 => new RelayCore<ILGPU.Half>(backend, eps, microBatch, microBatches, placement, resume, control, fault, dropout, seed, selection, codec),
            _ => new RelayCore<float>(backend, eps, microBatch, microBatches, placement, resume, control, fault, dropout, seed, selection, codec),
        };
    }

    /// <summary>
    /// Data parallel: the labelled targets of the whole global minibatch (every device and rank), which scales this
    /// replica's loss gradient and loss; null: this executor's own minibatch.
    /// </summary>
    internal long? LabelledTotal { get => _core.LabelledTotal; set => _core.LabelledTotal = value; }

    /// <summary>Data parallel: the global index of this replica's first micro-batch, so dropout masks match one device's.</summary>
    internal int MicroBatchOffset { get => _core.MicroBatchOffset; set => _core.MicroBatchOffset = value; }

    /// <inheritdoc/>
    public long StepsDone => _core.StepsDone;

    /// <inheritdoc/>
    public StepResult Step(long step, ReadOnlySpan<int> inputs, ReadOnlySpan<int> targets, ReadOnlySpan<int> tokenTypes = default) =>
        _core.Step(step, inputs, targets, tokenTypes);

    /// <inheritdoc/>
    public float[][] Weights() => _core.Weights();

    /// <inheritdoc/>
    public TrainingState State(IReadOnlyDictionary<string, string>? metadata = null) => _core.State(metadata);

    /// <inheritdoc/>
    public void Dispose() => _core.Dispose();
}

/// <summary>Thrown when the loss is NaN or infinite; nothing is saved from such a step.</summary>
public sealed class NonFiniteLossException : Exception
{
    /// <summary>Creates the exception for 0-based <paramref name="step"/>.</summary>
    public NonFiniteLossException(long step, double loss)
        : base($"The loss became {loss} at step {step + 1}. Training stopped before saving anything from this step. " +
               "Lower --lr, add --warmup steps, or check the data; resume from the last checkpoint with --resume.")
    {
        Step = step;
    }

    /// <summary>The 0-based step.</summary>
    public long Step { get; }
}
