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

    /// <summary>Allocates the buffers for <paramref name="shape"/> in <paramref name="category"/>.</summary>
    public BlockActivations(Backend backend, MicroBatch shape, MemoryCategory category = MemoryCategory.Workspace, string name = "block")
    {
        long n = shape.Tokens, c = shape.Config.Channels, nh = shape.Config.Heads, t = shape.SeqLen;
        DeviceBuffer<float> F(long len, string what)
        {
            var b = backend.Allocate<float>(len, category, $"{name}.{what}");
            return _owned.Add(b);
        }
        Ln1 = F(n * c, "ln1"); Mean1 = F(n, "mean1"); Rstd1 = F(n, "rstd1");
        Qkv = F(n * 3 * c, "qkv"); Lse = F(shape.Batch * nh * t, "lse"); AttY = F(n * c, "atty");
        X1 = F(n * c, "x1");
        Ln2 = F(n * c, "ln2"); Mean2 = F(n, "mean2"); Rstd2 = F(n, "rstd2");
        Fc = F(n * 4 * c, "fc"); Gelu = F(n * 4 * c, "gelu");
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

    /// <summary>Allocates the scratch for <paramref name="shape"/>.</summary>
    public LayerScratch(Backend backend, MicroBatch shape)
    {
        long n = shape.Tokens, c = shape.Config.Channels, v = shape.Config.VocabSize;
        DeviceBuffer<T> A<T>(long len, string what) where T : unmanaged
        {
            var b = backend.Allocate<T>(len, MemoryCategory.Workspace, what);
            return _owned.Add(b);
        }
        DLn = A<float>(n * c, "scratch.dln");
        DWide = A<float>(n * 4 * c, "scratch.dwide");
        DFc = A<float>(n * 4 * c, "scratch.dfc");
        AttentionScratch = A<float>(AttentionOps.BackwardScratchLength(shape.Batch, shape.SeqLen, shape.Config.Channels, shape.Config.Heads), "scratch.attention");
        Lnf = A<float>(n * c, "head.lnf"); MeanF = A<float>(n, "head.mean"); RstdF = A<float>(n, "head.rstd");
        Logits = A<float>(n * v, "head.logits");
        Losses = A<float>(n, "head.losses");
        LossSlot = A<float>(1, "head.loss-slot");
        LossTotal = A<float>(1, "head.loss-total");
        Partials = A<float>(ReduceOps.PartialsLength(backend), "head.partials");
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
