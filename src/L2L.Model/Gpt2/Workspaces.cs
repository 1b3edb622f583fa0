// GPT-2's device buffers for one micro-batch while layers run: saved block activations, backward and head scratch,
// in the storage type of the layers (FP32 or 16-bit) with FP32 where a reduction or a kernel needs it.
using ILGPU;
using L2L.Backends;
using L2L.Backends.Ops;

namespace L2L.Model.Device;

/// <summary>
/// What a transformer block's forward keeps for its backward, for one micro-batch. The relay
/// executor has one (filled again by recomputation); the conventional executor has one per block.
/// </summary>
/// <remarks>
/// The tensors (ln outputs, q,k,v, the attention output, the residual stream after attention, the MLP's
/// up-projection and GELU output) are <typeparamref name="T"/>. FP32 always: the LayerNorm statistics
/// (mean, rstd: per-row reductions the backward divides by) and the attention log-sum-exp (the softmax
/// normaliser the backward recomputes probabilities from; in 16 bits its rounding would scale every
/// probability). In 16 bits on the attention's row path (the CPU accelerator, heads too wide for tiles)
/// the forward also needs FP32 output accumulators, <c>attention-acc</c> (N, C); the tiled path needs none.
/// </remarks>
/// <typeparam name="T">The storage type: float, <see cref="L2L.Kernels.Bf16"/> or <see cref="ILGPU.Half"/>.</typeparam>
public sealed class BlockActivations<T> : IBlockActivations where T : unmanaged
{
    private readonly ResourceList _owned = new();

    /// <summary>
    /// The buffers <see cref="BlockActivations{T}(Backend, MicroBatch, MemoryCategory, string)"/> allocates, in order, for
    /// <paramref name="precision"/> on a device of <paramref name="device"/>'s shape: the 16-bit tensors have 2-byte elements.
    /// </summary>
    public static IReadOnlyList<BufferSpec> Describe(MicroBatch shape, Precision precision, DeviceShape device,
        MemoryCategory category = MemoryCategory.Workspace, string name = "block")
    {
        long n = shape.Tokens, c = shape.Config.Channels;
        var size = precision.ElementSize();
        BufferSpec S(string what, long len) => new($"{name}.{what}", category, len, size);
        BufferSpec F(string what, long len) => new($"{name}.{what}", category, len);
        var acc = AttentionOps.ForwardScratchLength(precision, device, shape.Batch, shape.SeqLen, (int)c, shape.Config.Heads);
        return
        [
            S("ln1", n * c), F("mean1", n), F("rstd1", n),
            S("qkv", n * 3 * c), F("lse", AttentionOps.LseLength(shape.Batch, shape.SeqLen, shape.Config.Heads)), S("atty", n * c),
            S("x1", n * c),
            S("ln2", n * c), F("mean2", n), F("rstd2", n),
            S("fc", n * 4 * c), S("gelu", n * 4 * c),
            .. acc > 0 ? [F("attention-acc", acc)] : Array.Empty<BufferSpec>(),
        ];
    }

    /// <summary>Allocates the buffers for <paramref name="shape"/> in <paramref name="category"/>.</summary>
    public BlockActivations(Backend backend, MicroBatch shape, MemoryCategory category = MemoryCategory.Workspace, string name = "block")
    {
        var specs = Describe(shape, Precisions.Of<T>(), DeviceShape.Of(backend.Accelerator), category, name);
        var b = _owned.Add(BufferSet.Create<T>(backend, specs));
        DeviceBuffer<T> S(string what) => b.Get<T>($"{name}.{what}");
        DeviceBuffer<float> F(string what) => b.Float($"{name}.{what}");
        Ln1 = S("ln1"); Mean1 = F("mean1"); Rstd1 = F("rstd1");
        Qkv = S("qkv"); Lse = F("lse"); AttY = S("atty");
        X1 = S("x1");
        Ln2 = S("ln2"); Mean2 = F("mean2"); Rstd2 = F("rstd2");
        Fc = S("fc"); Gelu = S("gelu");
        AttentionAcc = specs.Any(x => x.Name == $"{name}.attention-acc") ? F("attention-acc").View : default;
    }

    /// <summary>ln_1 output (N, C).</summary>
    public DeviceBuffer<T> Ln1 { get; }
    /// <summary>Mean of ln_1 (N), FP32.</summary>
    public DeviceBuffer<float> Mean1 { get; }
    /// <summary>Reciprocal std of ln_1 (N), FP32.</summary>
    public DeviceBuffer<float> Rstd1 { get; }
    /// <summary>Fused q,k,v projection (N, 3C).</summary>
    public DeviceBuffer<T> Qkv { get; }
    /// <summary>Attention log-sum-exp per query row (B, NH, T), FP32.</summary>
    public DeviceBuffer<float> Lse { get; }
    /// <summary>Attention output before the projection (N, C).</summary>
    public DeviceBuffer<T> AttY { get; }
    /// <summary>Residual stream after attention (N, C).</summary>
    public DeviceBuffer<T> X1 { get; }
    /// <summary>ln_2 output (N, C).</summary>
    public DeviceBuffer<T> Ln2 { get; }
    /// <summary>Mean of ln_2 (N), FP32.</summary>
    public DeviceBuffer<float> Mean2 { get; }
    /// <summary>Reciprocal std of ln_2 (N), FP32.</summary>
    public DeviceBuffer<float> Rstd2 { get; }
    /// <summary>MLP up-projection before GELU (N, 4C).</summary>
    public DeviceBuffer<T> Fc { get; }
    /// <summary>GELU output (N, 4C).</summary>
    public DeviceBuffer<T> Gelu { get; }
    /// <summary>The 16-bit attention forward's FP32 accumulators on the row path (N, C); empty otherwise.</summary>
    public ArrayView<float> AttentionAcc { get; }

    /// <inheritdoc/>
    public void Dispose()
    {
        _owned.Dispose();
    }
}

/// <summary>
/// Scratch for the backward passes and the head, for one micro-batch; shared by all layers. The
/// token ids, targets and scatter plan it once held are in <see cref="MicroBatchInputs"/>, shared by every model.
/// </summary>
/// <remarks>
/// Gradient temporaries, the head's LayerNorm output and the logits (then their gradient) are <typeparamref name="T"/>.
/// FP32 always: the attention backward's scratch (its per-row term and, in 16 bits on the row path, the gradient
/// accumulators), the head LayerNorm's statistics, the per-token losses, the loss sums and the reduction partials:
/// the loss is a sum over the micro-batch and the step, which 16 bits would not hold to the digits a loss curve shows.
/// </remarks>
/// <typeparam name="T">The storage type: float, <see cref="L2L.Kernels.Bf16"/> or <see cref="ILGPU.Half"/>.</typeparam>
public sealed class LayerScratch<T> : IModelScratch where T : unmanaged
{
    private readonly ResourceList _owned = new();

    /// <summary>
    /// The buffers the scratch allocates, in order, for <paramref name="precision"/> on a device of <paramref name="device"/>'s
    /// shape (which sizes the reduction partials, <see cref="ReduceOps.PartialsLength(DeviceShape)"/>, and the attention scratch).
    /// </summary>
    public static IReadOnlyList<BufferSpec> Describe(MicroBatch shape, Precision precision, DeviceShape device)
    {
        long n = shape.Tokens, c = shape.Config.Channels, v = shape.Config.VocabSize;
        var size = precision.ElementSize();
        BufferSpec S(string what, long len) => new(what, MemoryCategory.Workspace, len, size);
        BufferSpec F(string what, long len) => new(what, MemoryCategory.Workspace, len);
        return
        [
            S("scratch.dln", n * c), S("scratch.dwide", n * 4 * c), S("scratch.dfc", n * 4 * c),
            F("scratch.attention", AttentionOps.BackwardScratchLength(precision, device, shape.Batch, shape.SeqLen, shape.Config.Channels, shape.Config.Heads)),
            S("head.lnf", n * c), F("head.mean", n), F("head.rstd", n),
            S("head.logits", n * v), F("head.losses", n), F("head.loss-slot", 1), F("head.loss-total", 1),
            F("head.partials", ReduceOps.PartialsLength(device)),
        ];
    }

    /// <summary>Allocates the scratch for <paramref name="shape"/>.</summary>
    public LayerScratch(Backend backend, MicroBatch shape)
    {
        var b = _owned.Add(BufferSet.Create<T>(backend, Describe(shape, Precisions.Of<T>(), DeviceShape.Of(backend.Accelerator))));
        DLn = b.Get<T>("scratch.dln");
        DWide = b.Get<T>("scratch.dwide");
        DFc = b.Get<T>("scratch.dfc");
        AttentionScratch = b.Float("scratch.attention");
        Lnf = b.Get<T>("head.lnf"); MeanF = b.Float("head.mean"); RstdF = b.Float("head.rstd");
        Logits = b.Get<T>("head.logits");
        Losses = b.Float("head.losses");
        LossSlot = b.Float("head.loss-slot");
        LossTotal = b.Float("head.loss-total");
        Partials = b.Float("head.partials");
    }

    /// <summary>(N, C) gradient scratch.</summary>
    public DeviceBuffer<T> DLn { get; }
    /// <summary>(N, 4C) gradient scratch (GELU output gradient, then the q,k,v gradient).</summary>
    public DeviceBuffer<T> DWide { get; }
    /// <summary>(N, 4C) gradient of the MLP up-projection.</summary>
    public DeviceBuffer<T> DFc { get; }
    /// <summary>FP32 scratch for the attention backward.</summary>
    public DeviceBuffer<float> AttentionScratch { get; }
    /// <summary>ln_f output (N, C).</summary>
    public DeviceBuffer<T> Lnf { get; }
    /// <summary>ln_f mean (N), FP32.</summary>
    public DeviceBuffer<float> MeanF { get; }
    /// <summary>ln_f rstd (N), FP32.</summary>
    public DeviceBuffer<float> RstdF { get; }
    /// <summary>Logits, then their gradient in place (N, V).</summary>
    public DeviceBuffer<T> Logits { get; }
    /// <summary>Per-token losses (N), FP32.</summary>
    public DeviceBuffer<float> Losses { get; }
    /// <summary>One micro-batch's summed loss (1).</summary>
    public DeviceBuffer<float> LossSlot { get; }
    /// <summary>Summed loss over the micro-batches of a step (1).</summary>
    public DeviceBuffer<float> LossTotal { get; }
    /// <summary>Reduction scratch.</summary>
    public DeviceBuffer<float> Partials { get; }

    /// <inheritdoc/>
    public void Dispose()
    {
        _owned.Dispose();
    }
}
