// The baseline: the whole model, its gradients and optimizer state resident on the device.
using ILGPU;
using ILGPU.Runtime;
using L2L.Backends;
using L2L.Backends.Ops;
using L2L.Model;
using L2L.Model.Device;
using L2L.Training.Optim;
using L2L.Training.Update;

namespace L2L.Training;

/// <summary>The conventional executor over storage type <typeparamref name="T"/>; see <see cref="ConventionalExecutor"/>.</summary>
internal sealed class ConventionalCore<T> : IConventionalCore where T : unmanaged
{
    private readonly Backend _backend;
    private readonly ModelLayout _layout;
    private readonly IModelLayers<T> _layers;
    private readonly Precision _precision;
    private readonly CastOps _cast;
    private readonly DeviceLayerOptimizer _optimizer;
    private readonly OptimizerSettings _settings;
    private readonly MicroBatch _mb;
    private readonly int _microBatches;
    private readonly ResourceList _owned = new();
    private readonly DeviceBuffer<T>[] _params;
    private readonly DeviceBuffer<float>[] _grads;
    // 16-bit: the FP32 master weights the optimizer updates (it writes the working copies in _params); empty in FP32.
    private readonly DeviceBuffer<float>[] _masters = [];
    private readonly IBlockActivations[] _acts;
    private readonly DeviceBuffer<T> _blockInputs, _headInput, _dStream;
    private readonly IModelScratch _scratch;
    private readonly MicroBatchInputs _inputs;
    private readonly PinnedHostBuffer<float> _loss;
    private readonly GradientControl _control;
    private readonly GradientFault? _fault;
    private readonly ReduceOps _reduce;
    private readonly DeviceBuffer<float> _partials, _sumSquares;
    private readonly float[] _sumSquaresHost;
    private readonly DropoutRates _dropout;
    private readonly LayerSelection _selection;
    private readonly long _seed;

    /// <summary>Uploads the model and allocates everything the executor will use.</summary>
    /// <param name="backend">The device.</param>
    /// <param name="layout">The model's layers.</param>
    /// <param name="weights">The initial weights, one array per layer.</param>
    /// <param name="optimizer">SGD or AdamW and its hyper-parameters.</param>
    /// <param name="schedule">The learning-rate schedule.</param>
    /// <param name="microBatch">The shape of one micro-batch.</param>
    /// <param name="microBatches">U, the number of micro-batches per minibatch.</param>
    /// <param name="resume">Optimizer state and step to continue from.</param>
    /// <param name="control">Clipping and loss scaling (default: none), applied on the device from the global or per-layer norms.</param>
    /// <param name="fault">A test hook that poisons one layer's gradient at one step.</param>
    /// <param name="dropout">Dropout rates (default none), masks keyed by (<paramref name="seed"/>, step, layer, micro-batch, element).</param>
    /// <param name="seed">The run's seed, for the dropout masks.</param>
    /// <param name="selection">Layer drop and frozen layers (default: every layer runs and trains).</param>
    public ConventionalCore(Backend backend, ModelLayout layout, IReadOnlyList<float[]> weights, OptimizerSettings optimizer,
        LearningRateSchedule schedule, MicroBatch microBatch, int microBatches, TrainingState? resume,
        GradientControl? control, GradientFault? fault, DropoutRates? dropout, long seed, LayerSelection? selection)
    {
        _precision = Precisions.Of<T>();
        ArgumentOutOfRangeException.ThrowIfLessThan(microBatches, 1);
        microBatch.Validate();
        if (optimizer.Kind == OptimizerKind.Lamb)
            throw new NotSupportedException("The conventional executor runs SGD and AdamW on the device; LAMB runs on the host with --executor relay.");
        _backend = backend;
        _layout = layout;
        _settings = optimizer;
        _mb = microBatch;
        _microBatches = microBatches;
        _control = control ?? new GradientControl(null, ClipMode.Global, LossScaleMode.None, layout.Layers.Count, resume);
        _selection = selection ?? LayerSelection.All(layout);
        _fault = fault;
        _dropout = dropout ?? DropoutRates.None;
        _seed = seed;
        _reduce = backend.Get<ReduceOps>();
        _cast = backend.Get<CastOps>();
        _sumSquaresHost = new float[layout.Layers.Count];
        if (resume is not null)
        {
            if (!string.Equals(resume.Optimizer, EagerParamServer.OptimizerName(optimizer.Kind), StringComparison.OrdinalIgnoreCase))
                throw new InvalidDataException($"The checkpoint's optimizer state is for '{resume.Optimizer}', but training uses '{EagerParamServer.OptimizerName(optimizer.Kind)}'.");
            StepsDone = resume.Step;
        }
        try
        {
            _layers = Models.CreateLayers<T>(backend, layout);
            // Every buffer's length comes from the plan `l2l plan` prints, so what it predicts is what is allocated.
            var planned = new Planning.PlanSettings(layout.Config, microBatch.Batch, microBatches, microBatch.SeqLen, ExecutorKind.Conventional,
                StashPlacement.Device, new Stash.StashCodecSettings(), optimizer.Kind, UpdateLocation.Device, UpdateMode.Eager, StatePrecision.Fp32,
                DeviceShape.Of(backend.Accelerator), Precision: _precision);
            var device = Planning.Planner.ConventionalDevice(planned, layout);
            DeviceBuffer<float> F(string name) => Track(backend.Allocate<float>(device.Named(name)));
            DeviceBuffer<T> S(string name) => Track(backend.Allocate<T>(device.Named(name)));
            var count = layout.Layers.Count;
            _params = new DeviceBuffer<T>[count];
            _grads = new DeviceBuffer<float>[count];
            if (_precision.Is16Bit()) _masters = new DeviceBuffer<float>[count];
            var s = backend.ComputeStream;
            for (var i = 0; i < count; i++)
            {
                var layer = layout.Layers[i];
                _params[i] = S(layer.Name);
                _grads[i] = F(layer.Name + ".grads");
                if (_precision.Is16Bit())
                {
                    _masters[i] = F(layer.Name + ".master");
                    _masters[i].View.CopyFromCPU(s, weights[i]);
                    _cast.FromFloat(s, _params[i].View, _masters[i].View);
                }
                else
                {
                    _params[i].View.Cast<float>().CopyFromCPU(s, weights[i]);
                }
            }
            _optimizer = Track(new DeviceLayerOptimizer(backend, optimizer, schedule, layout.Layers, resume));
            var blocks = layout.Blocks.Count;
            _acts = new IBlockActivations[blocks];
            for (var l = 0; l < blocks; l++)
                _acts[l] = Track(_layers.CreateActivations(backend, microBatch, MemoryCategory.Stash, $"{layout.Blocks[l].Name}.activations"));
            _blockInputs = S("block-inputs");
            _headInput = S("head-input");
            _dStream = S("residual-grads");
            _scratch = Track(_layers.CreateScratch(backend, microBatch));
            _inputs = Track(new MicroBatchInputs(backend, microBatch, microBatches, _layers.Inputs));
            _loss = Track(backend.AllocatePinned<float>(Planning.Planner.ConventionalHost(planned).Named("host.loss").Length));
            _partials = F("grad-norm.partials");
            _sumSquares = F("grad-norm.sums");
            s.Synchronize();
        }
        catch
        {
            Dispose();
            throw;
        }
    }

    private R Track<R>(R resource) where R : IDisposable => _owned.Add(resource);

    /// <inheritdoc/>
    public long StepsDone { get; private set; }

    private ArrayView<T> BlockInput(int l) => _blockInputs.Slice(l * _mb.ActivationLength, _mb.ActivationLength);

    /// <inheritdoc/>
    public StepResult Step(long step, ReadOnlySpan<int> inputs, ReadOnlySpan<int> targets, ReadOnlySpan<int> tokenTypes = default)
    {
        var s = _backend.ComputeStream;
        var uploadedBefore = _inputs.UploadedBytes;
        var (labelled, updated, blocksRun, backwardLayers) = ForwardBackward(step, inputs, targets, tokenTypes, _control.LossScale);

        // Every updated layer's sum of squares, then one decision for the step (global norm, clip, overflow), applied on the device.
        _sumSquares.View.MemSetToZero(s);
        foreach (var layer in updated)
        {
            var g = _grads[layer.Index].View;
            if (_fault is { } f && f.Step == step && f.Layer == layer.Index)
                _reduce.Scale(s, g.SubView(0, 1), float.NaN);
            _reduce.SumOfSquares(s, _sumSquares.View.SubView(layer.Index, 1), g, _partials.View);
        }
        _sumSquares.View.CopyToCPU(s, _sumSquaresHost);
        s.Synchronize();
        var decision = _control.Decide(_sumSquaresHost);
        // Without a dynamic scale, a layer whose gradients overflowed is not updated (and is reported); under global
        // clipping the norm itself is then not finite, so no layer is.
        HashSet<int> overflowed = _control.Scaler is not null ? []
            : updated.Where(l => _control.LayerOverflowed(_sumSquaresHost[l.Index])).Select(l => l.Index).ToHashSet();
        var skipAll = decision.Skip || (overflowed.Count > 0 && _control.ClipGradNorm is not null && _control.ClipMode == ClipMode.Global);
        foreach (var i in overflowed) _control.ReportOverflow(i);
        if (!skipAll)
        {
            foreach (var layer in updated)
            {
                if (overflowed.Contains(layer.Index)) continue;
                var factor = _control.LayerFactor(_sumSquaresHost[layer.Index], decision.Factor);
                if (factor != 1f)
                    _reduce.Scale(s, _grads[layer.Index].View, factor);
                if (_masters.Length > 0)
                    _optimizer.Step(s, layer, _masters[layer.Index].View, _grads[layer.Index].View, _params[layer.Index].View, step, _control.NextOptimizerStep(layer.Index));
                else
                    _optimizer.Step(s, layer, _params[layer.Index].View.Cast<float>(), _grads[layer.Index].View, step, _control.NextOptimizerStep(layer.Index));
            }
        }
        _loss.CopyFromDeviceAsync(s, _scratch.LossTotal.View);
        s.Synchronize();
        StepsDone++;
        var loss = _loss.Span[0] / (double)labelled;
        if (!double.IsFinite(loss))
            throw new NonFiniteLossException(step, loss);
        // The inputs went up, the sums of squares and the loss came back.
        var bus = new Planning.BusTraffic(0, 0, 0, 0, _inputs.UploadedBytes - uploadedBefore + sizeof(float) + _sumSquares.Bytes);
        return new StepResult(loss, bus.Total, GradNorm: decision.GradNorm, Skipped: skipAll,
            LossScale: _control.LossScale, SkippedSteps: _control.SkippedSteps, BlocksRun: blocksRun, BackwardLayers: backwardLayers, BusBytesByKind: bus,
            OverflowedLayers: _control.TakeOverflowedLayers().Order().Select(i => _layout.Layers[i].Name).ToArray() is { Length: > 0 } names ? names : null);
    }

    /// <summary>
    /// The minibatch's mean loss and its gradients at the current weights, one array per layer, without updating
    /// anything (a reference for clipping, dropout and optimizer tests); dropout masks as in 0-based step <paramref name="step"/>.
    /// </summary>
    public (double Loss, float[][] Gradients) LossAndGradients(ReadOnlySpan<int> inputs, ReadOnlySpan<int> targets, ReadOnlySpan<int> tokenTypes = default, long step = 0)
    {
        var labelled = ForwardBackward(step, inputs, targets, tokenTypes, 1f).Labelled;
        var s = _backend.ComputeStream;
        var result = new float[_grads.Length][];
        for (var i = 0; i < _grads.Length; i++)
        {
            result[i] = new float[_grads[i].Length];
            _grads[i].View.CopyToCPU(s, result[i]);
        }
        _loss.CopyFromDeviceAsync(s, _scratch.LossTotal.View);
        s.Synchronize();
        return (_loss.Span[0] / (double)labelled, result);
    }

    /// <summary>
    /// Zeroes the gradients and accumulates those of every micro-batch over the step's blocks (layer drop) down to
    /// the lowest trainable layer, the loss gradient multiplied by <paramref name="scale"/>. Returns the labelled-target
    /// count, the layers to update (those that ran and are not frozen), the blocks run and the layers whose backward ran.
    /// </summary>
    private (long Labelled, LayerLayout[] Updated, int BlocksRun, int BackwardLayers) ForwardBackward(long step, ReadOnlySpan<int> inputs,
        ReadOnlySpan<int> targets, ReadOnlySpan<int> tokenTypes, float scale)
    {
        var tokens = _microBatches * _mb.Tokens;
        if (inputs.Length != tokens || targets.Length != tokens)
            throw new ArgumentException($"Expected {tokens} input and target tokens ({_microBatches} micro-batches of {_mb.Batch}x{_mb.SeqLen}).");
        var s = _backend.ComputeStream;
        var labelled = Math.Max(1, _inputs.Load(inputs, targets, tokenTypes));
        var lossScale = scale / labelled;
        var emb = _layout.Embedding.Index;
        var head = _layout.Head.Index;
        // The step's blocks in order; position j's input is BlockInput(j).
        var blocks = _selection.ActiveBlocks(step).Select(l => _layout.Blocks[l]).ToArray();
        var n = blocks.Length;
        var embeddingTrains = !_selection.IsFrozen(emb);
        var lowest = embeddingTrains ? 0 : Enumerable.Range(0, n).Where(j => !_selection.IsFrozen(blocks[j].Index)).DefaultIfEmpty(n).First();
        _scratch.LossTotal.View.MemSetToZero(s);
        foreach (var g in _grads) g.View.MemSetToZero(s);
        for (var u = 0; u < _microBatches; u++)
        {
            _layers.SetDropout(_dropout.Any ? new DropoutContext(_dropout, _seed, step, u) : null);
            _inputs.UploadInputs(s, u);
            _inputs.UploadTargets(s, u);
            _inputs.UploadPlans(s, u);
            _layers.EmbeddingForward(s, _mb, _params[emb].View, _inputs, BlockInput(0), _scratch);
            for (var j = 0; j < n; j++)
            {
                var output = j + 1 < n ? BlockInput(j + 1) : _headInput.View;
                _layers.BlockForward(s, _mb, blocks[j], _params[blocks[j].Index].View, BlockInput(j), output, _acts[j], _inputs);
            }
            _layers.HeadForwardBackward(s, _mb, _params[head].View, _grads[head].View, _params[emb].View, _grads[emb].View,
                _headInput.View, _inputs, _dStream.View, _scratch, lossScale);
            for (var j = n - 1; j >= lowest; j--)
            {
                var i = blocks[j].Index;
                _layers.BlockBackward(s, _mb, blocks[j], _params[i].View, _grads[i].View, BlockInput(j), _dStream.View, _acts[j], _scratch, _inputs,
                    parameterGradients: !_selection.IsFrozen(i));
            }
            if (embeddingTrains)
                _layers.EmbeddingBackward(s, _mb, _params[emb].View, _grads[emb].View, _inputs, _dStream.View, _scratch);
        }
        var ran = new HashSet<int>(blocks.Select(b => b.Index)) { emb, head };
        var updated = _layout.Layers.Where(l => ran.Contains(l.Index) && !_selection.IsFrozen(l.Index)).ToArray();
        return (labelled, updated, n, n - lowest + (embeddingTrains ? 1 : 0));
    }

    /// <inheritdoc/>
    public float[][] Weights()
    {
        var s = _backend.ComputeStream;
        var result = new float[_params.Length][];
        for (var i = 0; i < _params.Length; i++)
        {
            result[i] = new float[_params[i].Length];
            (_masters.Length > 0 ? _masters[i].View : _params[i].View.Cast<float>()).CopyToCPU(s, result[i]);
        }
        s.Synchronize();
        return result;
    }

    /// <inheritdoc/>
    public TrainingState State(IReadOnlyDictionary<string, string>? metadata = null)
    {
        var s = _backend.ComputeStream;
        s.Synchronize();
        var states = _layout.Layers.Select(layer => _optimizer.State(s, layer)).ToArray();
        return new TrainingState(StepsDone, EagerParamServer.OptimizerName(_settings.Kind), _optimizer.StateFloatsPerParam, states,
            metadata ?? new Dictionary<string, string>());
    }

    /// <inheritdoc/>
    public void Dispose()
    {
        try { _backend.Synchronize(); } catch (Exception) { /* release what we own regardless */ }
        _owned.Dispose();
    }
}

/// <summary>What <see cref="ConventionalExecutor"/> needs of its typed core.</summary>
internal interface IConventionalCore : IExecutor
{
    (double Loss, float[][] Gradients) LossAndGradients(ReadOnlySpan<int> inputs, ReadOnlySpan<int> targets, ReadOnlySpan<int> tokenTypes, long step);
}

/// <summary>
/// Ordinary training, the reference for relay's results and the baseline for its memory and
/// speed: every layer's weights, gradients and optimizer state live on the device; each
/// micro-batch runs forward through all layers keeping every activation, then backward, with
/// gradients accumulated over the U micro-batches; the optimizer runs on the device once per step.
/// Device memory grows with depth.
/// </summary>
/// <remarks>
/// In bf16 or fp16 every layer's weights are a 16-bit working copy that the layers read, next to its FP32 master and
/// optimizer state (all on the device); the optimizer updates the master and writes the copy in the same pass.
/// Activations, the stash of block inputs and the residual stream's gradient are 16-bit; parameter gradients FP32.
/// </remarks>
public sealed class ConventionalExecutor : IExecutor
{
    private readonly IConventionalCore _core;

    /// <summary>Uploads the model and allocates everything the executor will use.</summary>
    /// <param name="backend">The device.</param>
    /// <param name="layout">The model's layers.</param>
    /// <param name="weights">The initial weights, one array per layer.</param>
    /// <param name="optimizer">SGD or AdamW and its hyper-parameters.</param>
    /// <param name="schedule">The learning-rate schedule.</param>
    /// <param name="microBatch">The shape of one micro-batch.</param>
    /// <param name="microBatches">U, the number of micro-batches per minibatch.</param>
    /// <param name="resume">Optimizer state and step to continue from.</param>
    /// <param name="control">Clipping and loss scaling (default: none), applied on the device from the global or per-layer norms.</param>
    /// <param name="fault">A test hook that poisons one layer's gradient at one step.</param>
    /// <param name="dropout">Dropout rates (default none), masks keyed by (<paramref name="seed"/>, step, layer, micro-batch, element).</param>
    /// <param name="seed">The run's seed, for the dropout masks.</param>
    /// <param name="selection">Layer drop and frozen layers (default: every layer runs and trains).</param>
    /// <param name="precision">The device storage precision (default FP32).</param>
    public ConventionalExecutor(Backend backend, ModelLayout layout, IReadOnlyList<float[]> weights, OptimizerSettings optimizer,
        LearningRateSchedule schedule, MicroBatch microBatch, int microBatches, TrainingState? resume = null,
        GradientControl? control = null, GradientFault? fault = null, DropoutRates? dropout = null, long seed = 0,
        LayerSelection? selection = null, Precision precision = Precision.Fp32)
    {
        _core = precision switch
        {
            Precision.Bf16 => new ConventionalCore<Kernels.Bf16>(backend, layout, weights, optimizer, schedule, microBatch, microBatches, resume, control, fault, dropout, seed, selection),
            Precision.Fp16 => new ConventionalCore<ILGPU.Half>(backend, layout, weights, optimizer, schedule, microBatch, microBatches, resume, control, fault, dropout, seed, selection),
            _ => new ConventionalCore<float>(backend, layout, weights, optimizer, schedule, microBatch, microBatches, resume, control, fault, dropout, seed, selection),
        };
    }

    /// <inheritdoc/>
    public long StepsDone => _core.StepsDone;

    /// <inheritdoc/>
    public StepResult Step(long step, ReadOnlySpan<int> inputs, ReadOnlySpan<int> targets, ReadOnlySpan<int> tokenTypes = default) =>
        _core.Step(step, inputs, targets, tokenTypes);

    /// <summary>
    /// The minibatch's mean loss and its gradients at the current weights, one array per layer, without updating
    /// anything (a reference for clipping, dropout and optimizer tests); dropout masks as in 0-based step <paramref name="step"/>.
    /// </summary>
    public (double Loss, float[][] Gradients) LossAndGradients(ReadOnlySpan<int> inputs, ReadOnlySpan<int> targets, ReadOnlySpan<int> tokenTypes = default, long step = 0) =>
        _core.LossAndGradients(inputs, targets, tokenTypes, step);

    /// <inheritdoc/>
    public float[][] Weights() => _core.Weights();

    /// <inheritdoc/>
    public TrainingState State(IReadOnlyDictionary<string, string>? metadata = null) => _core.State(metadata);

    /// <inheritdoc/>
    public void Dispose() => _core.Dispose();
}
