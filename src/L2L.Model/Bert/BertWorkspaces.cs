// BERT's device buffers for one micro-batch: what a post-LN block keeps for its backward, and the scratch shared by all layers.
using ILGPU;
using ILGPU.Runtime;
using L2L.Backends;
using L2L.Backends.Ops;
using L2L.Model.Device;

namespace L2L.Model.Bert;

/// <summary>What a BERT block's forward keeps for its backward, for one micro-batch (N = B·T tokens, H hidden, I intermediate).</summary>
/// <remarks>
/// The tensors are <typeparamref name="T"/>; the LayerNorm statistics and the attention log-sum-exp stay FP32 (reductions
/// the backward divides or exponentiates by), as do the 16-bit attention forward's output accumulators on the row path
/// (<c>attention-acc</c>, (N, H); none on the tiled path).
/// </remarks>
/// <typeparam name="T">The storage type: float, <see cref="L2L.Kernels.Bf16"/> or <see cref="ILGPU.Half"/>.</typeparam>
public sealed class BertBlockActivations<T> : IBlockActivations where T : unmanaged
{
    private readonly ResourceList _owned = new();

    /// <summary>
    /// The buffers <see cref="BertBlockActivations{T}(Backend, MicroBatch, MemoryCategory, string)"/> allocates, in order, for
    /// <paramref name="precision"/> on a device of <paramref name="device"/>'s shape: the 16-bit tensors have 2-byte elements.
    /// </summary>
    public static IReadOnlyList<BufferSpec> Describe(MicroBatch shape, Precision precision, DeviceShape device,
        MemoryCategory category = MemoryCategory.Workspace, string name = "block")
    {
        var config = (BertConfig)shape.Config;
        long n = shape.Tokens, h = config.HiddenSize, i = config.IntermediateSize;
        var size = precision.ElementSize();
        BufferSpec S(string what, long len) => new($"{name}.{what}", category, len, size);
        BufferSpec F(string what, long len) => new($"{name}.{what}", category, len);
        var acc = AttentionOps.ForwardScratchLength(precision, device, shape.Batch, shape.SeqLen, (int)h, config.Heads);
        return
        [
            S("qkv", n * 3 * h), F("lse", AttentionOps.LseLength(shape.Batch, shape.SeqLen, config.Heads)), S("atty", n * h),
            S("att-sum", n * h), F("mean1", n), F("rstd1", n),
            S("x1", n * h),
            S("fc", n * i), S("gelu", n * i),
            S("out-sum", n * h), F("mean2", n), F("rstd2", n),
            .. acc > 0 ? [F("attention-acc", acc)] : Array.Empty<BufferSpec>(),
        ];
    }

    /// <summary>Allocates the buffers for <paramref name="shape"/> in <paramref name="category"/>.</summary>
    public BertBlockActivations(Backend backend, MicroBatch shape, MemoryCategory category = MemoryCategory.Workspace, string name = "block")
    {
        var specs = Describe(shape, Precisions.Of<T>(), DeviceShape.Of(backend.Accelerator), category, name);
        var b = _owned.Add(BufferSet.Create<T>(backend, specs));
        DeviceBuffer<T> S(string what) => b.Get<T>($"{name}.{what}");
        DeviceBuffer<float> F(string what) => b.Float($"{name}.{what}");
        Qkv = S("qkv");
        Lse = F("lse");
        AttY = S("atty");
        AttSum = S("att-sum"); Mean1 = F("mean1"); Rstd1 = F("rstd1");
        X1 = S("x1");
        Fc = S("fc"); Gelu = S("gelu");
        OutSum = S("out-sum"); Mean2 = F("mean2"); Rstd2 = F("rstd2");
        AttentionAcc = specs.Any(x => x.Name == $"{name}.attention-acc") ? F("attention-acc").View : default;
    }

    /// <summary>The 16-bit attention forward's FP32 accumulators on the row path (N, H); empty otherwise.</summary>
    public ArrayView<float> AttentionAcc { get; }

    /// <summary>Query, key and value side by side (N, 3H).</summary>
    public DeviceBuffer<T> Qkv { get; }
    /// <summary>Each attention row's log-sum-exp (B, NH, T), what the backward needs to recompute the probabilities.</summary>
    public DeviceBuffer<float> Lse { get; }
    /// <summary>Attention output before its dense projection (N, H).</summary>
    public DeviceBuffer<T> AttY { get; }
    /// <summary>x + dense(attention), the input of the attention LayerNorm (N, H).</summary>
    public DeviceBuffer<T> AttSum { get; }
    /// <summary>Mean of the attention LayerNorm (N).</summary>
    public DeviceBuffer<float> Mean1 { get; }
    /// <summary>Reciprocal std of the attention LayerNorm (N).</summary>
    public DeviceBuffer<float> Rstd1 { get; }
    /// <summary>The attention LayerNorm's output, the feed-forward's input (N, H).</summary>
    public DeviceBuffer<T> X1 { get; }
    /// <summary>Intermediate dense output before GELU (N, I).</summary>
    public DeviceBuffer<T> Fc { get; }
    /// <summary>GELU output (N, I).</summary>
    public DeviceBuffer<T> Gelu { get; }
    /// <summary>x1 + dense(gelu), the input of the output LayerNorm (N, H).</summary>
    public DeviceBuffer<T> OutSum { get; }
    /// <summary>Mean of the output LayerNorm (N).</summary>
    public DeviceBuffer<float> Mean2 { get; }
    /// <summary>Reciprocal std of the output LayerNorm (N).</summary>
    public DeviceBuffer<float> Rstd2 { get; }

    /// <inheritdoc/>
    public void Dispose() => _owned.Dispose();
}

/// <summary>BERT's scratch for one micro-batch, shared by all layers: backward temporaries, the embedding's and the head's internals, the loss.</summary>
/// <remarks>
/// The tensors are <typeparamref name="T"/>. FP32 always: the attention backward's scratch, the LayerNorm statistics, the
/// position-gradient sink (it receives an FP32 gradient), the losses, the loss sums and the reduction partials.
/// </remarks>
/// <typeparam name="T">The storage type: float, <see cref="L2L.Kernels.Bf16"/> or <see cref="ILGPU.Half"/>.</typeparam>
public sealed class BertScratch<T> : IModelScratch where T : unmanaged
{
    private readonly ResourceList _owned = new();

    /// <summary>
    /// The buffers the scratch allocates, in order, for <paramref name="precision"/> on a device of <paramref name="device"/>'s
    /// shape (which sizes the reduction partials, <see cref="ReduceOps.PartialsLength(DeviceShape)"/>, and the attention scratch).
    /// </summary>
    public static IReadOnlyList<BufferSpec> Describe(MicroBatch shape, Precision precision, DeviceShape device)
    {
        var config = (BertConfig)shape.Config;
        long n = shape.Tokens, h = config.HiddenSize, i = config.IntermediateSize, v = config.VocabSize, t = shape.SeqLen;
        var size = precision.ElementSize();
        BufferSpec S(string what, long len) => new(what, MemoryCategory.Workspace, len, size);
        BufferSpec F(string what, long len) => new(what, MemoryCategory.Workspace, len);
        return
        [
            S("scratch.dln", n * h), S("scratch.dwide", n * Math.Max(i, 3 * h)),
            F("scratch.attention", AttentionOps.BackwardScratchLength(precision, device, shape.Batch, shape.SeqLen, (int)h, config.Heads)),
            S("embedding.sum", n * h), S("embedding.rows", n * h), F("embedding.mean", n), F("embedding.rstd", n),
            S("embedding.zeros", t * h), F("embedding.position-sink", t * h),
            S("head.transform", n * h), S("head.transform-gelu", n * h),
            S("head.ln", n * h), F("head.mean", n), F("head.rstd", n),
            S("head.logits", n * v), F("head.losses", n), F("head.loss-slot", 1), F("head.loss-total", 1),
            F("head.partials", ReduceOps.PartialsLength(device)),
        ];
    }

    /// <summary>Allocates the scratch for <paramref name="shape"/>.</summary>
    public BertScratch(Backend backend, MicroBatch shape)
    {
        var b = _owned.Add(BufferSet.Create<T>(backend, Describe(shape, Precisions.Of<T>(), DeviceShape.Of(backend.Accelerator))));
        DLn = b.Get<T>("scratch.dln");
        DWide = b.Get<T>("scratch.dwide");
        AttentionScratch = b.Float("scratch.attention");
        EmbeddingSum = b.Get<T>("embedding.sum"); EmbeddingRows = b.Get<T>("embedding.rows");
        EmbeddingMean = b.Float("embedding.mean"); EmbeddingRstd = b.Float("embedding.rstd");
        Zeros = b.Get<T>("embedding.zeros"); PositionSink = b.Float("embedding.position-sink");
        Transform = b.Get<T>("head.transform"); TransformGelu = b.Get<T>("head.transform-gelu");
        HeadLn = b.Get<T>("head.ln"); HeadMean = b.Float("head.mean"); HeadRstd = b.Float("head.rstd");
        Logits = b.Get<T>("head.logits");
        Losses = b.Float("head.losses");
        LossSlot = b.Float("head.loss-slot");
        LossTotal = b.Float("head.loss-total");
        Partials = b.Float("head.partials");
        Zeros.View.MemSetToZero(backend.ComputeStream);
    }

    /// <summary>(N, H) gradient scratch.</summary>
    public DeviceBuffer<T> DLn { get; }
    /// <summary>(N, max(I, 3H)) gradient scratch: the feed-forward's, then q, k and v's.</summary>
    public DeviceBuffer<T> DWide { get; }
    /// <summary>Scratch for the attention backward.</summary>
    public DeviceBuffer<float> AttentionScratch { get; }
    /// <summary>word + position + token-type embedding, the embedding LayerNorm's input (N, H).</summary>
    public DeviceBuffer<T> EmbeddingSum { get; }
    /// <summary>Token-type rows, then a discarded LayerNorm output when the embedding is recomputed (N, H).</summary>
    public DeviceBuffer<T> EmbeddingRows { get; }
    /// <summary>Mean of the embedding LayerNorm (N).</summary>
    public DeviceBuffer<float> EmbeddingMean { get; }
    /// <summary>Reciprocal std of the embedding LayerNorm (N).</summary>
    public DeviceBuffer<float> EmbeddingRstd { get; }
    /// <summary>(T, H) zeros: the position term when gathering token-type rows with the embedding kernel.</summary>
    public DeviceBuffer<T> Zeros { get; }
    /// <summary>(T, H) where the token-type gradient's unwanted position sums go.</summary>
    public DeviceBuffer<float> PositionSink { get; }
    /// <summary>Head transform dense output before GELU (N, H).</summary>
    public DeviceBuffer<T> Transform { get; }
    /// <summary>Head transform after GELU (N, H).</summary>
    public DeviceBuffer<T> TransformGelu { get; }
    /// <summary>Head LayerNorm output, the decoder's input (N, H).</summary>
    public DeviceBuffer<T> HeadLn { get; }
    /// <summary>Head LayerNorm mean (N).</summary>
    public DeviceBuffer<float> HeadMean { get; }
    /// <summary>Head LayerNorm rstd (N).</summary>
    public DeviceBuffer<float> HeadRstd { get; }
    /// <summary>Logits, then their gradient in place (N, V).</summary>
    public DeviceBuffer<T> Logits { get; }
    /// <summary>Per-position losses, 0 where unlabelled (N).</summary>
    public DeviceBuffer<float> Losses { get; }
    /// <summary>One micro-batch's summed loss (1).</summary>
    public DeviceBuffer<float> LossSlot { get; }
    /// <inheritdoc/>
    public DeviceBuffer<float> LossTotal { get; }
    /// <summary>Reduction scratch.</summary>
    public DeviceBuffer<float> Partials { get; }

    /// <inheritdoc/>
    public void Dispose() => _owned.Dispose();
}
