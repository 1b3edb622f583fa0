// GPT-2's device buffers for one micro-batch while layers run: saved block activations, backward and head scratch.
using ILGPU;
using L2L.Backends;
using L2L.Backends.Ops;

namespace L2L.Model.Device;

/// <summary>
/// What a transformer block's forward keeps for its backward, for one micro-batch. The relay
/// executor has one (filled again by recomputation); the conventional executor has one per block.
/// </summary>
public sealed class BlockActivations : IBlockActivations
{
    private readonly ResourceList _owned = new();

    /// <summary>The buffers <see cref="BlockActivations(Backend, MicroBatch, MemoryCategory, string)"/> allocates, in order.</summary>
    public static IReadOnlyList<BufferSpec> Describe(MicroBatch shape, MemoryCategory category = MemoryCategory.Workspace, string name = "block")
    {
        long n = shape.Tokens, c = shape.Config.Channels;
        BufferSpec F(string what, long len) => new($"{name}.{what}", category, len);
        return
        [
            F("ln1", n * c), F("mean1", n), F("rstd1", n),
            F("qkv", n * 3 * c), F("lse", AttentionOps.LseLength(shape.Batch, shape.SeqLen, shape.Config.Heads)), F("atty", n * c),
            F("x1", n * c),
            F("ln2", n * c), F("mean2", n), F("rstd2", n),
            F("fc", n * 4 * c), F("gelu", n * 4 * c),
        ];
    }

    /// <summary>Allocates the buffers for <paramref name="shape"/> in <paramref name="category"/>.</summary>
    public BlockActivations(Backend backend, MicroBatch shape, MemoryCategory category = MemoryCategory.Workspace, string name = "block")
    {
        var b = _owned.Add(new BufferSet(backend, Describe(shape, category, name)));
        DeviceBuffer<float> F(string what) => b.Float($"{name}.{what}");
        Ln1 = F("ln1"); Mean1 = F("mean1"); Rstd1 = F("rstd1");
        Qkv = F("qkv"); Lse = F("lse"); AttY = F("atty");
        X1 = F("x1");
        Ln2 = F("ln2"); Mean2 = F("mean2"); Rstd2 = F("rstd2");
        Fc = F("fc"); Gelu = F("gelu");
    }

    /// <summary>ln_1 output (N, C) and its statistics (N).</summary>
    public DeviceBuffer<float> Ln1 { get; }
    /// <summary>Mean of ln_1 (N).</summary>
    public DeviceBuffer<float> Mean1 { get; }
    /// <summary>Reciprocal std of ln_1 (N).</summary>
    public DeviceBuffer<float> Rstd1 { get; }
    /// <summary>Fused q,k,v projection (N, 3C).</summary>
    public DeviceBuffer<float> Qkv { get; }
    /// <summary>Attention log-sum-exp per query row (B, NH, T).</summary>
    public DeviceBuffer<float> Lse { get; }
    /// <summary>Attention output before the projection (N, C).</summary>
    public DeviceBuffer<float> AttY { get; }
    /// <summary>Residual stream after attention (N, C).</summary>
    public DeviceBuffer<float> X1 { get; }
    /// <summary>ln_2 output (N, C).</summary>
    public DeviceBuffer<float> Ln2 { get; }
    /// <summary>Mean of ln_2 (N).</summary>
    public DeviceBuffer<float> Mean2 { get; }
    /// <summary>Reciprocal std of ln_2 (N).</summary>
    public DeviceBuffer<float> Rstd2 { get; }
    /// <summary>MLP up-projection before GELU (N, 4C).</summary>
    public DeviceBuffer<float> Fc { get; }
    /// <summary>GELU output (N, 4C).</summary>
    public DeviceBuffer<float> Gelu { get; }

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
public sealed class LayerScratch : IModelScratch
{
    private readonly ResourceList _owned = new();

    /// <summary>The buffers the scratch allocates, in order, with <paramref name="partialsLength"/> the device's reduction scratch (<see cref="ReduceOps.PartialsLength(DeviceShape)"/>).</summary>
    public static IReadOnlyList<BufferSpec> Describe(MicroBatch shape, int partialsLength)
    {
        long n = shape.Tokens, c = shape.Config.Channels, v = shape.Config.VocabSize;
        BufferSpec F(string what, long len) => new(what, MemoryCategory.Workspace, len);
        return
        [
            F("scratch.dln", n * c), F("scratch.dwide", n * 4 * c), F("scratch.dfc", n * 4 * c),
            F("scratch.attention", AttentionOps.BackwardScratchLength(shape.Batch, shape.SeqLen, shape.Config.Channels, shape.Config.Heads)),
            F("head.lnf", n * c), F("head.mean", n), F("head.rstd", n),
            F("head.logits", n * v), F("head.losses", n), F("head.loss-slot", 1), F("head.loss-total", 1),
            F("head.partials", partialsLength),
        ];
    }

    /// <summary>Allocates the scratch for <paramref name="shape"/>.</summary>
    public LayerScratch(Backend backend, MicroBatch shape)
    {
        var b = _owned.Add(new BufferSet(backend, Describe(shape, ReduceOps.PartialsLength(backend))));
        DLn = b.Float("scratch.dln");
        DWide = b.Float("scratch.dwide");
        DFc = b.Float("scratch.dfc");
        AttentionScratch = b.Float("scratch.attention");
        Lnf = b.Float("head.lnf"); MeanF = b.Float("head.mean"); RstdF = b.Float("head.rstd");
        Logits = b.Float("head.logits");
        Losses = b.Float("head.losses");
        LossSlot = b.Float("head.loss-slot");
        LossTotal = b.Float("head.loss-total");
        Partials = b.Float("head.partials");
    }

    /// <summary>(N, C) gradient scratch.</summary>
    public DeviceBuffer<float> DLn { get; }
    /// <summary>(N, 4C) gradient scratch (GELU output gradient, then the q,k,v gradient).</summary>
    public DeviceBuffer<float> DWide { get; }
    /// <summary>(N, 4C) gradient of the MLP up-projection.</summary>
    public DeviceBuffer<float> DFc { get; }
    /// <summary>Scratch for the attention backward.</summary>
    public DeviceBuffer<float> AttentionScratch { get; }
    /// <summary>ln_f output (N, C).</summary>
    public DeviceBuffer<float> Lnf { get; }
    /// <summary>ln_f mean (N).</summary>
    public DeviceBuffer<float> MeanF { get; }
    /// <summary>ln_f rstd (N).</summary>
    public DeviceBuffer<float> RstdF { get; }
    /// <summary>Logits, then their gradient in place (N, V).</summary>
    public DeviceBuffer<float> Logits { get; }
    /// <summary>Per-token losses (N).</summary>
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
