// BERT's device buffers for one micro-batch: what a post-LN block keeps for its backward, and the scratch shared by all layers.
using ILGPU.Runtime;
using L2L.Backends;
using L2L.Backends.Ops;
using L2L.Model.Device;

namespace L2L.Model.Bert;

/// <summary>What a BERT block's forward keeps for its backward, for one micro-batch (N = B·T tokens, H hidden, I intermediate).</summary>
public sealed class BertBlockActivations : IBlockActivations
{
    private readonly ResourceList _owned = new();

    /// <summary>The buffers <see cref="BertBlockActivations(Backend, MicroBatch, MemoryCategory, string)"/> allocates, in order.</summary>
    public static IReadOnlyList<BufferSpec> Describe(MicroBatch shape, MemoryCategory category = MemoryCategory.Workspace, string name = "block")
    {
        var config = (BertConfig)shape.Config;
        long n = shape.Tokens, h = config.HiddenSize, i = config.IntermediateSize;
        BufferSpec F(string what, long len) => new($"{name}.{what}", category, len);
        return
        [
            F("qkv", n * 3 * h), F("lse", AttentionOps.LseLength(shape.Batch, shape.SeqLen, config.Heads)), F("atty", n * h),
            F("att-sum", n * h), F("mean1", n), F("rstd1", n),
            F("x1", n * h),
            F("fc", n * i), F("gelu", n * i),
            F("out-sum", n * h), F("mean2", n), F("rstd2", n),
        ];
    }

    /// <summary>Allocates the buffers for <paramref name="shape"/> in <paramref name="category"/>.</summary>
    public BertBlockActivations(Backend backend, MicroBatch shape, MemoryCategory category = MemoryCategory.Workspace, string name = "block")
    {
        var b = _owned.Add(new BufferSet(backend, Describe(shape, category, name)));
        DeviceBuffer<float> F(string what) => b.Float($"{name}.{what}");
        Qkv = F("qkv");
        Lse = F("lse");
        AttY = F("atty");
        AttSum = F("att-sum"); Mean1 = F("mean1"); Rstd1 = F("rstd1");
        X1 = F("x1");
        Fc = F("fc"); Gelu = F("gelu");
        OutSum = F("out-sum"); Mean2 = F("mean2"); Rstd2 = F("rstd2");
    }

    /// <summary>Query, key and value side by side (N, 3H).</summary>
    public DeviceBuffer<float> Qkv { get; }
    /// <summary>Each attention row's log-sum-exp (B, NH, T), what the backward needs to recompute the probabilities.</summary>
    public DeviceBuffer<float> Lse { get; }
    /// <summary>Attention output before its dense projection (N, H).</summary>
    public DeviceBuffer<float> AttY { get; }
    /// <summary>x + dense(attention), the input of the attention LayerNorm (N, H).</summary>
    public DeviceBuffer<float> AttSum { get; }
    /// <summary>Mean of the attention LayerNorm (N).</summary>
    public DeviceBuffer<float> Mean1 { get; }
    /// <summary>Reciprocal std of the attention LayerNorm (N).</summary>
    public DeviceBuffer<float> Rstd1 { get; }
    /// <summary>The attention LayerNorm's output, the feed-forward's input (N, H).</summary>
    public DeviceBuffer<float> X1 { get; }
    /// <summary>Intermediate dense output before GELU (N, I).</summary>
    public DeviceBuffer<float> Fc { get; }
    /// <summary>GELU output (N, I).</summary>
    public DeviceBuffer<float> Gelu { get; }
    /// <summary>x1 + dense(gelu), the input of the output LayerNorm (N, H).</summary>
    public DeviceBuffer<float> OutSum { get; }
    /// <summary>Mean of the output LayerNorm (N).</summary>
    public DeviceBuffer<float> Mean2 { get; }
    /// <summary>Reciprocal std of the output LayerNorm (N).</summary>
    public DeviceBuffer<float> Rstd2 { get; }

    /// <inheritdoc/>
    public void Dispose() => _owned.Dispose();
}

/// <summary>BERT's scratch for one micro-batch, shared by all layers: backward temporaries, the embedding's and the head's internals, the loss.</summary>
public sealed class BertScratch : IModelScratch
{
    private readonly ResourceList _owned = new();

    /// <summary>The buffers the scratch allocates, in order, with <paramref name="partialsLength"/> the device's reduction scratch (<see cref="ReduceOps.PartialsLength(DeviceShape)"/>).</summary>
    public static IReadOnlyList<BufferSpec> Describe(MicroBatch shape, int partialsLength)
    {
        var config = (BertConfig)shape.Config;
        long n = shape.Tokens, h = config.HiddenSize, i = config.IntermediateSize, v = config.VocabSize, t = shape.SeqLen;
        BufferSpec F(string what, long len) => new(what, MemoryCategory.Workspace, len);
        return
        [
            F("scratch.dln", n * h), F("scratch.dwide", n * Math.Max(i, 3 * h)),
            F("scratch.attention", AttentionOps.BackwardScratchLength(shape.Batch, shape.SeqLen, (int)h, config.Heads)),
            F("embedding.sum", n * h), F("embedding.rows", n * h), F("embedding.mean", n), F("embedding.rstd", n),
            F("embedding.zeros", t * h), F("embedding.position-sink", t * h),
            F("head.transform", n * h), F("head.transform-gelu", n * h),
            F("head.ln", n * h), F("head.mean", n), F("head.rstd", n),
            F("head.logits", n * v), F("head.losses", n), F("head.loss-slot", 1), F("head.loss-total", 1),
            F("head.partials", partialsLength),
        ];
    }

    /// <summary>Allocates the scratch for <paramref name="shape"/>.</summary>
    public BertScratch(Backend backend, MicroBatch shape)
    {
        var b = _owned.Add(new BufferSet(backend, Describe(shape, ReduceOps.PartialsLength(backend))));
        DLn = b.Float("scratch.dln");
        DWide = b.Float("scratch.dwide");
        AttentionScratch = b.Float("scratch.attention");
        EmbeddingSum = b.Float("embedding.sum"); EmbeddingRows = b.Float("embedding.rows");
        EmbeddingMean = b.Float("embedding.mean"); EmbeddingRstd = b.Float("embedding.rstd");
        Zeros = b.Float("embedding.zeros"); PositionSink = b.Float("embedding.position-sink");
        Transform = b.Float("head.transform"); TransformGelu = b.Float("head.transform-gelu");
        HeadLn = b.Float("head.ln"); HeadMean = b.Float("head.mean"); HeadRstd = b.Float("head.rstd");
        Logits = b.Float("head.logits");
        Losses = b.Float("head.losses");
        LossSlot = b.Float("head.loss-slot");
        LossTotal = b.Float("head.loss-total");
        Partials = b.Float("head.partials");
        Zeros.View.MemSetToZero(backend.ComputeStream);
    }

    /// <summary>(N, H) gradient scratch.</summary>
    public DeviceBuffer<float> DLn { get; }
    /// <summary>(N, max(I, 3H)) gradient scratch: the feed-forward's, then q, k and v's.</summary>
    public DeviceBuffer<float> DWide { get; }
    /// <summary>Scratch for the attention backward.</summary>
    public DeviceBuffer<float> AttentionScratch { get; }
    /// <summary>word + position + token-type embedding, the embedding LayerNorm's input (N, H).</summary>
    public DeviceBuffer<float> EmbeddingSum { get; }
    /// <summary>Token-type rows, then a discarded LayerNorm output when the embedding is recomputed (N, H).</summary>
    public DeviceBuffer<float> EmbeddingRows { get; }
    /// <summary>Mean of the embedding LayerNorm (N).</summary>
    public DeviceBuffer<float> EmbeddingMean { get; }
    /// <summary>Reciprocal std of the embedding LayerNorm (N).</summary>
    public DeviceBuffer<float> EmbeddingRstd { get; }
    /// <summary>(T, H) zeros: the position term when gathering token-type rows with the embedding kernel.</summary>
    public DeviceBuffer<float> Zeros { get; }
    /// <summary>(T, H) where the token-type gradient's unwanted position sums go.</summary>
    public DeviceBuffer<float> PositionSink { get; }
    /// <summary>Head transform dense output before GELU (N, H).</summary>
    public DeviceBuffer<float> Transform { get; }
    /// <summary>Head transform after GELU (N, H).</summary>
    public DeviceBuffer<float> TransformGelu { get; }
    /// <summary>Head LayerNorm output, the decoder's input (N, H).</summary>
    public DeviceBuffer<float> HeadLn { get; }
    /// <summary>Head LayerNorm mean (N).</summary>
    public DeviceBuffer<float> HeadMean { get; }
    /// <summary>Head LayerNorm rstd (N).</summary>
    public DeviceBuffer<float> HeadRstd { get; }
    /// <summary>Logits, then their gradient in place (N, V).</summary>
    public DeviceBuffer<float> Logits { get; }
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
