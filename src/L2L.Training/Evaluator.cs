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
    private readonly Backend _backend;
    private readonly ModelLayout _layout;
    private readonly IReadOnlyList<float[]>? _weights;
    private readonly IModelLayers<float> _layers;
    private readonly MicroBatch _mb;
    private readonly ResourceList _owned = new();
    private readonly DeviceBuffer<float> _embedding, _head, _slot, _x0, _x1;
    private readonly IBlockActivations _act;
    private readonly IModelScratch _scratch;
    private readonly MicroBatchInputs _inputs;

    /// <summary>
    /// Prepares evaluation of <paramref name="weights"/> in batches of <paramref name="batch"/> sequences of <paramref name="seqLen"/> tokens;
    /// with null weights, each call of <see cref="Evaluate(IBatchSource, int, IReadOnlyList{float[]})"/> passes its own.
    /// </summary>
    public Evaluator(Backend backend, ModelLayout layout, IReadOnlyList<float[]>? weights, int batch, int seqLen)
    {
        _backend = backend;
        _layout = layout;
        _weights = weights;
        _mb = new MicroBatch(layout.Config, batch, seqLen);
        _mb.Validate();
        _layers = Models.CreateLayers<float>(backend, layout);
        try
        {
            var blockLength = layout.Blocks.Count > 0 ? layout.Blocks[0].Length : 0;
            _embedding = Track(backend.Allocate<float>(layout.Embedding.Length, MemoryCategory.Params, "embedding"));
            _head = Track(backend.Allocate<float>(layout.Head.Length, MemoryCategory.Params, "head"));
            _slot = Track(backend.Allocate<float>(blockLength, MemoryCategory.Params, "block-slot"));
            _x0 = Track(backend.Allocate<float>(_mb.ActivationLength, MemoryCategory.Workspace, "x0"));
            _x1 = Track(backend.Allocate<float>(_mb.ActivationLength, MemoryCategory.Workspace, "x1"));
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

    private T Track<T>(T resource) where T : IDisposable => _owned.Add(resource);

    /// <summary>Mean loss over <paramref name="batches"/> batches of <paramref name="data"/> cut for next-token prediction.</summary>
    public EvalResult Evaluate(ITokenSource data, int batches) => Evaluate(new BatchLoader(data, _mb.Batch, _mb.SeqLen), batches);

    /// <summary>Mean loss over every labelled position of the first <paramref name="batches"/> batches of <paramref name="source"/>.</summary>
    public EvalResult Evaluate(IBatchSource source, int batches) =>
        Evaluate(source, batches, _weights ?? throw new InvalidOperationException("This evaluator was built without weights; pass them to Evaluate."));

    /// <summary>As <see cref="Evaluate(IBatchSource, int)"/>, for <paramref name="weights"/> (one array per layer) instead of the constructor's.</summary>
    public EvalResult Evaluate(IBatchSource source, int batches, IReadOnlyList<float[]> weights)
    {
        ArgumentNullException.ThrowIfNull(weights);
        ArgumentOutOfRangeException.ThrowIfLessThan(batches, 1);
        if (source.Batch != _mb.Batch || source.SeqLen != _mb.SeqLen)
            throw new ArgumentException($"The batch source makes {source.Batch}x{source.SeqLen} batches; the evaluator was built for {_mb.Batch}x{_mb.SeqLen}.");
        var inputs = new int[_mb.Tokens];
        var targets = new int[_mb.Tokens];
        var s = _backend.ComputeStream;
        _embedding.View.CopyFromCPU(s, weights[_layout.Embedding.Index]);
        _head.View.CopyFromCPU(s, weights[_layout.Head.Index]);
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
                _slot.View.SubView(0, block.Length).CopyFromCPU(s, weights[block.Index]);
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

    /// <inheritdoc/>
    public void Dispose()
    {
        try { _backend.Synchronize(); } catch (Exception) { /* release what we own regardless */ }
        _owned.Dispose();
    }
}
