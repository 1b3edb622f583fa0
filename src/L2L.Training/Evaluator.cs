// Forward-only evaluation of a model's mean cross-entropy, one layer on the device at a time.
using ILGPU;
using ILGPU.Runtime;
using L2L.Backends;
using L2L.Model;
using L2L.Model.Data;
using L2L.Model.Device;

namespace L2L.Training;

/// <summary>The result of an evaluation.</summary>
/// <param name="Loss">Mean cross-entropy over every labelled position evaluated (every token for a causal model).</param>
/// <param name="Tokens">Labelled positions evaluated (the loss's denominator).</param>
/// <param name="Batches">Batches evaluated.</param>
public sealed record EvalResult(double Loss, long Tokens, int Batches);

/// <summary>
/// Evaluates a model on windows taken exactly as training takes them (batch i is step i's
/// minibatch, without shuffling). Each batch runs layer by layer through one parameter slot and
/// two activation buffers, so device memory is that of one layer and one batch.
/// </summary>
public sealed class Evaluator : IDisposable
{
    private readonly Action _dispose;
    private readonly Func<IBatchSource, int, IReadOnlyList<float[]>?, EvalResult> _evaluate;
    private readonly int _batch, _seqLen;

    /// <summary>
    /// Prepares evaluation of <paramref name="weights"/> in batches of <paramref name="batch"/> sequences of <paramref name="seqLen"/> tokens;
    /// with null weights, each call of <see cref="Evaluate(IBatchSource, int, IReadOnlyList{float[]})"/> passes its own.
    /// In bf16 or fp16 (<paramref name="precision"/>) the weights are rounded to 16 bits on the way to the device and the
    /// activations are 16-bit, as in training at that precision.
    /// </summary>
    public Evaluator(Backend backend, ModelLayout layout, IReadOnlyList<float[]>? weights, int batch, int seqLen, Precision precision = Precision.Fp32)
    {
        (_batch, _seqLen) = (batch, seqLen);
        switch (precision)
        {
            case Precision.Bf16:
                var b = new EvaluatorCore<Kernels.Bf16>(backend, layout, weights, batch, seqLen);
                (_dispose, _evaluate) = (b.Dispose, b.Evaluate);
                break;
            case Precision.Fp16:
                var h = new EvaluatorCore<ILGPU.Half>(backend, layout, weights, batch, seqLen);
                (_dispose, _evaluate) = (h.Dispose, h.Evaluate);
                break;
            default:
                var f = new EvaluatorCore<float>(backend, layout, weights, batch, seqLen);
                (_dispose, _evaluate) = (f.Dispose, f.Evaluate);
                break;
        }
        Precision = precision;
    }

    /// <summary>The device storage precision of the evaluation.</summary>
    public Precision Precision { get; }

    /// <summary>Mean loss over <paramref name="batches"/> batches of <paramref name="data"/> cut for next-token prediction.</summary>
    public EvalResult Evaluate(ITokenSource data, int batches) => Evaluate(new BatchLoader(data, _batch, _seqLen), batches);

    /// <summary>Mean loss over every labelled position of the first <paramref name="batches"/> batches of <paramref name="source"/>.</summary>
    public EvalResult Evaluate(IBatchSource source, int batches) => _evaluate(source, batches, null);

    /// <summary>As <see cref="Evaluate(IBatchSource, int)"/>, for <paramref name="weights"/> (one array per layer) instead of the constructor's.</summary>
    public EvalResult Evaluate(IBatchSource source, int batches, IReadOnlyList<float[]> weights)
    {
        ArgumentNullException.ThrowIfNull(weights);
        return _evaluate(source, batches, weights);
    }

    /// <inheritdoc/>
    public void Dispose() => _dispose();
}

/// <summary>The evaluator over storage type <typeparamref name="T"/>; see <see cref="Evaluator"/>.</summary>
internal sealed class EvaluatorCore<T> : IDisposable where T : unmanaged
{
    private readonly Backend _backend;
    private readonly ModelLayout _layout;
    private readonly IReadOnlyList<float[]>? _weights;
    private readonly IModelLayers<T> _layers;
    private readonly T[] _staging; // one layer's weights narrowed to T on the host before upload
    private readonly MicroBatch _mb;
    private readonly ResourceList _owned = new();
    private readonly DeviceBuffer<T> _embedding, _head, _slot, _x0, _x1;
    private readonly IBlockActivations _act;
    private readonly IModelScratch _scratch;
    private readonly MicroBatchInputs _inputs;

    /// <summary>
    /// Prepares evaluation of <paramref name="weights"/> in batches of <paramref name="batch"/> sequences of <paramref name="seqLen"/> tokens;
    /// with null weights, each call of <see cref="Evaluate(IBatchSource, int, IReadOnlyList{float[]})"/> passes its own.
    /// </summary>
    public EvaluatorCore(Backend backend, ModelLayout layout, IReadOnlyList<float[]>? weights, int batch, int seqLen)
    {
        _backend = backend;
        _layout = layout;
        _weights = weights;
        _mb = new MicroBatch(layout.Config, batch, seqLen);
        _mb.Validate();
        _layers = Models.CreateLayers<T>(backend, layout);
        try
        {
            var blockLength = layout.Blocks.Count > 0 ? layout.Blocks[0].Length : 0;
            _staging = typeof(T) == typeof(float) ? [] : new T[Math.Max(blockLength, Math.Max(layout.Embedding.Length, layout.Head.Length))];
            _embedding = Track(backend.Allocate<T>(layout.Embedding.Length, MemoryCategory.Params, "embedding"));
            _head = Track(backend.Allocate<T>(layout.Head.Length, MemoryCategory.Params, "head"));
            _slot = Track(backend.Allocate<T>(blockLength, MemoryCategory.Params, "block-slot"));
            _x0 = Track(backend.Allocate<T>(_mb.ActivationLength, MemoryCategory.Workspace, "x0"));
            _x1 = Track(backend.Allocate<T>(_mb.ActivationLength, MemoryCategory.Workspace, "x1"));
            _act = Track(_layers.CreateActivations(backend, _mb));
            _scratch = Track(_layers.CreateScratch(backend, _mb));
            _inputs = Track(new MicroBatchInputs(backend, _mb, 1, _layers.Inputs));
        }
        catch
        {
            Dispose();
            throw;
        }
    }

    private R Track<R>(R resource) where R : IDisposable => _owned.Add(resource);

    /// <summary>Mean loss over every labelled position of the first <paramref name="batches"/> batches of <paramref name="source"/>, for <paramref name="weights"/> or the constructor's.</summary>
    public EvalResult Evaluate(IBatchSource source, int batches, IReadOnlyList<float[]>? weights)
    {
        weights ??= _weights ?? throw new InvalidOperationException("This evaluator was built without weights; pass them to Evaluate.");
        ArgumentOutOfRangeException.ThrowIfLessThan(batches, 1);
        if (source.Batch != _mb.Batch || source.SeqLen != _mb.SeqLen)
            throw new ArgumentException($"The batch source makes {source.Batch}x{source.SeqLen} batches; the evaluator was built for {_mb.Batch}x{_mb.SeqLen}.");
        var inputs = new int[_mb.Tokens];
        var targets = new int[_mb.Tokens];
        var s = _backend.ComputeStream;
        Upload(_embedding.View, weights[_layout.Embedding.Index]);
        Upload(_head.View, weights[_layout.Head.Index]);
        _scratch.LossTotal.View.MemSetToZero(s);
        long labelled = 0;
        for (var i = 0; i < batches; i++)
        {
            source.Fill(i, inputs, targets);
            s.Synchronize(); // the previous batch's uploads read the pinned inputs that Load overwrites
            labelled += _inputs.Load(inputs, targets);
            _inputs.UploadInputs(s, 0);
            _inputs.UploadTargets(s, 0);
            _layers.EmbeddingForward(s, _mb, _embedding.View, _inputs, _x0.View, _scratch);
            var x = _x0;
            var y = _x1;
            foreach (var block in _layout.Blocks)
            {
                s.Synchronize();
                Upload(_slot.View.SubView(0, block.Length), weights[block.Index]);
                _layers.BlockForward(s, _mb, block, _slot.View, x.View, y.View, _act, _inputs);
                (x, y) = (y, x);
            }
            _layers.HeadLoss(s, _mb, _head.View, _embedding.View, x.View, _inputs, _scratch);
        }
        var total = new float[1];
        _scratch.LossTotal.View.CopyToCPU(s, total);
        s.Synchronize();
        return new EvalResult(labelled > 0 ? total[0] / (double)labelled : 0, labelled, batches);
    }

    /// <summary>Copies one layer's FP32 weights to <paramref name="target"/>, rounded to T on the host (synchronously, as a plain copy is).</summary>
    private void Upload(ArrayView<T> target, float[] weights)
    {
        var s = _backend.ComputeStream;
        if (typeof(T) == typeof(float))
        {
            target.Cast<float>().SubView(0, weights.Length).CopyFromCPU(s, weights);
            return;
        }
        s.Synchronize(); // the staging array is reused
        var staged = _staging.AsSpan(0, weights.Length);
        // The host optimizers' narrowing, which rounds to nearest even exactly as the device's cast kernels do.
        if (typeof(T) == typeof(Kernels.Bf16))
            Optim.Bf16Convert.ToBf16(weights, System.Runtime.InteropServices.MemoryMarshal.Cast<T, Kernels.Bf16>(staged));
        else
            Optim.HalfConvert.ToHalf(weights, System.Runtime.InteropServices.MemoryMarshal.Cast<T, System.Half>(staged));
        target.SubView(0, weights.Length).CopyFromCPU(s, (ReadOnlySpan<T>)staged);
        s.Synchronize();
    }

    /// <inheritdoc/>
    public void Dispose()
    {
        try { _backend.Synchronize(); } catch (Exception) { /* release what we own regardless */ }
        _owned.Dispose();
    }
}
