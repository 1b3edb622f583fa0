// BERT's layers over one micro-batch on the device: embedding -> LayerNorm, post-LN encoder block, tied MLM head + loss.
using ILGPU;
using ILGPU.Runtime;
using L2L.Backends;
using L2L.Backends.Ops;
using L2L.Model.Device;

namespace L2L.Model.Bert;

/// <summary>
/// <c>BertForMaskedLM</c>'s layers over one micro-batch, enqueued on a stream. Linear weights are
/// PyTorch's [out, in], so a forward is <c>y = x . W^T + b</c> (GEMM NT), the input gradient
/// <c>dx = dy . W</c> (NN) and the weight gradient <c>dW += dy^T . x</c> (TN). GELU is the exact erf form.
/// Attention is bidirectional; keys at the padding id are masked out through the inputs' key mask.
/// </summary>
/// <remarks>
/// Over the storage type <typeparamref name="T"/>: parameters, activations, the stream and its gradient are
/// <typeparamref name="T"/>, parameter gradients FP32; each 16-bit kernel computes in FP32 and rounds its result once.
/// What stays FP32 besides the gradients is listed on <see cref="BertBlockActivations{T}"/> and <see cref="BertScratch{T}"/>.
/// With float every call runs the FP32 kernels.
/// </remarks>
/// <typeparam name="T">The storage type: float, <see cref="L2L.Kernels.Bf16"/> or <see cref="ILGPU.Half"/>.</typeparam>
public sealed class BertLayers<T> : IModelLayers<T> where T : unmanaged
{
    private readonly GemmOps _gemm;
    private readonly LayerNormOps _ln;
    private readonly GeluOps _gelu;
    private readonly AttentionOps _attention;
    private readonly ResidualOps _residual;
    private readonly EmbeddingOps _embedding;
    private readonly CrossEntropyOps _crossEntropy;
    private readonly ReduceOps _reduce;
    private readonly DropoutOps _dropoutOps;
    private DropoutContext? _dropout;

    // Dropout sites within a layer, part of each mask's key.
    private const int EmbeddingSite = 0, AttentionOutputSite = 0, OutputSite = 1;

    /// <summary>Loads (once per backend) every kernel group the layers use.</summary>
    public BertLayers(Backend backend, ModelLayout layout)
    {
        if (layout.Config is not BertConfig)
            throw new ArgumentException($"BERT layers need a BERT layout, got model type '{layout.Config.ModelType}'.", nameof(layout));
        Layout = layout;
        _gemm = backend.Get<GemmOps>();
        _ln = backend.Get<LayerNormOps>();
        _gelu = backend.Get<GeluOps>();
        _attention = backend.Get<AttentionOps>();
        _residual = backend.Get<ResidualOps>();
        _embedding = backend.Get<EmbeddingOps>();
        _crossEntropy = backend.Get<CrossEntropyOps>();
        _reduce = backend.Get<ReduceOps>();
        _dropoutOps = backend.Get<DropoutOps>();
    }

    /// <inheritdoc/>
    /// <remarks>
    /// Hidden dropout (the embedding rate on the embedding's output, the residual rate on each sub-layer's output
    /// before its residual add and LayerNorm); attention-probability dropout is refused.
    /// </remarks>
    /// <exception cref="NotSupportedException">Attention-probability dropout was asked for.</exception>
    public void SetDropout(DropoutContext? context)
    {
        if (context is { Rates.Attention: > 0 })
            throw new NotSupportedException("Dropout on attention probabilities is not implemented (the attention kernels keep no probabilities to mask).");
        _dropout = context is { Rates.Any: true } ? context : null;
    }

    private float EmbeddingRate => _dropout?.Rates.Embedding ?? 0f;
    private float ResidualRate => _dropout?.Rates.Residual ?? 0f;

    /// <summary><c>output = dropout(input)</c> with the mask of (layer, site) in the current step and micro-batch (also the backward on a gradient).</summary>
    private void Dropout(AcceleratorStream s, ArrayView<T> output, ArrayView<T> input, float p, int layer, int site)
    {
        var d = _dropout!.Value;
        _dropoutOps.Apply(s, output, input, p, Kernels.DropoutKernels.Key(d.Seed, d.Step, layer, site), d.MicroBatch * input.Length);
    }

    /// <inheritdoc/>
    public ModelLayout Layout { get; }

    /// <inheritdoc/>
    public Precision Precision { get; } = Precisions.Of<T>();

    private BertConfig Config => (BertConfig)Layout.Config;

    /// <inheritdoc/>
    public ModelInputs Inputs => Models.InputsOf(Config);

    /// <inheritdoc/>
    public bool BlocksReadInputs => Models.BlocksReadInputs(Config);

    /// <inheritdoc/>
    public IBlockActivations CreateActivations(Backend backend, MicroBatch shape, MemoryCategory category = MemoryCategory.Workspace, string name = "block") =>
        new BertBlockActivations<T>(backend, shape, category, name);

    /// <inheritdoc/>
    public IModelScratch CreateScratch(Backend backend, MicroBatch shape) => new BertScratch<T>(backend, shape);

    /// <summary>output (N, H) = LayerNorm(word[ids] + position[t] + token_type[types]).</summary>
    public void EmbeddingForward(AcceleratorStream s, MicroBatch mb, ArrayView<T> embedding, MicroBatchInputs inputs,
        ArrayView<T> output, IModelScratch modelScratch)
    {
        var scratch = (BertScratch<T>)modelScratch;
        var p = new LayerViews<T>(Layout.Embedding, embedding);
        EmbeddingSum(s, mb, p, inputs, scratch);
        _ln.Forward(s, output, scratch.EmbeddingMean.View, scratch.EmbeddingRstd.View, scratch.EmbeddingSum.View,
            p["LayerNorm.weight"], p["LayerNorm.bias"], mb.Tokens, Config.HiddenSize, Config.LayerNormEpsilon);
        if (EmbeddingRate > 0) Dropout(s, output, output, EmbeddingRate, Layout.Embedding.Index, EmbeddingSite);
    }

    /// <summary>Recomputes the embedding sum and its LayerNorm statistics, then scatters the gradient into the three tables.</summary>
    public void EmbeddingBackward(AcceleratorStream s, MicroBatch mb, ArrayView<T> embedding, ArrayView<float> embeddingGrads,
        MicroBatchInputs inputs, ArrayView<T> dOutput, IModelScratch modelScratch)
    {
        var scratch = (BertScratch<T>)modelScratch;
        var p = new LayerViews<T>(Layout.Embedding, embedding);
        var g = new LayerViews<float>(Layout.Embedding, embeddingGrads);
        int n = mb.Tokens, h = Config.HiddenSize;
        EmbeddingSum(s, mb, p, inputs, scratch);
        _ln.Forward(s, scratch.EmbeddingRows.View, scratch.EmbeddingMean.View, scratch.EmbeddingRstd.View, scratch.EmbeddingSum.View,
            p["LayerNorm.weight"], p["LayerNorm.bias"], n, h, Config.LayerNormEpsilon);
        if (EmbeddingRate > 0) Dropout(s, dOutput, dOutput, EmbeddingRate, Layout.Embedding.Index, EmbeddingSite);
        _ln.Backward(s, dOutput, g["LayerNorm.weight"], g["LayerNorm.bias"], dOutput, scratch.EmbeddingSum.View, p["LayerNorm.weight"],
            scratch.EmbeddingMean.View, scratch.EmbeddingRstd.View, n, h, accumulateInput: false);
        _embedding.Backward(s, g["word_embeddings.weight"], g["position_embeddings.weight"], dOutput, inputs.ScatterPlan.View, inputs.Segments,
            mb.Batch, mb.SeqLen, h);
        _embedding.Backward(s, g["token_type_embeddings.weight"], scratch.PositionSink.View, dOutput, inputs.TypeScatterPlan!.View, inputs.TypeSegments,
            mb.Batch, mb.SeqLen, h);
    }

    private void EmbeddingSum(AcceleratorStream s, MicroBatch mb, LayerViews<T> p, MicroBatchInputs inputs, BertScratch<T> scratch)
    {
        int h = Config.HiddenSize;
        _embedding.Forward(s, scratch.EmbeddingSum.View, inputs.Ids.View, p["word_embeddings.weight"], p["position_embeddings.weight"], mb.Batch, mb.SeqLen, h);
        // The embedding kernel adds a position row; with a zero table it gathers the token-type rows alone.
        _embedding.Forward(s, scratch.EmbeddingRows.View, inputs.TokenTypes!.View, p["token_type_embeddings.weight"], scratch.Zeros.View, mb.Batch, mb.SeqLen, h);
        _residual.Accumulate(s, scratch.EmbeddingSum.View, scratch.EmbeddingRows.View);
    }

    /// <summary>
    /// One post-LN encoder block: a = LN(x + dense(attention(q, k, v))); output = LN(a + dense(gelu(dense(a)))).
    /// Saves what the backward needs in <paramref name="activations"/>. <paramref name="output"/> must not alias <paramref name="input"/>.
    /// </summary>
    public void BlockForward(AcceleratorStream s, MicroBatch mb, LayerLayout layer, ArrayView<T> parameters,
        ArrayView<T> input, ArrayView<T> output, IBlockActivations activations, MicroBatchInputs inputs)
    {
        var act = (BertBlockActivations<T>)activations;
        var p = new LayerViews<T>(layer, parameters);
        int n = mb.Tokens, h = Config.HiddenSize, i = Config.IntermediateSize;
        var eps = Config.LayerNormEpsilon;
        var (wQkv, bQkv) = Qkv(layer, parameters);
        _gemm.Gemm(s, act.Qkv.View, input, wQkv, n, 3 * h, h, GemmLayout.NT, bias: bQkv);
        AttentionForward(s, mb, act, inputs);
        _gemm.Gemm(s, act.AttSum.View, act.AttY.View, p["attention.output.dense.weight"], n, h, h, GemmLayout.NT, bias: p["attention.output.dense.bias"]);
        if (ResidualRate > 0) Dropout(s, act.AttSum.View, act.AttSum.View, ResidualRate, layer.Index, AttentionOutputSite);
        _residual.Add(s, act.AttSum.View, act.AttSum.View, input);
        _ln.Forward(s, act.X1.View, act.Mean1.View, act.Rstd1.View, act.AttSum.View,
            p["attention.output.LayerNorm.weight"], p["attention.output.LayerNorm.bias"], n, h, eps);
        _gemm.Gemm(s, act.Fc.View, act.X1.View, p["intermediate.dense.weight"], n, i, h, GemmLayout.NT, bias: p["intermediate.dense.bias"]);
        _gelu.ForwardErf(s, act.Gelu.View, act.Fc.View);
        _gemm.Gemm(s, act.OutSum.View, act.Gelu.View, p["output.dense.weight"], n, h, i, GemmLayout.NT, bias: p["output.dense.bias"]);
        if (ResidualRate > 0) Dropout(s, act.OutSum.View, act.OutSum.View, ResidualRate, layer.Index, OutputSite);
        _residual.Add(s, act.OutSum.View, act.OutSum.View, act.X1.View);
        _ln.Forward(s, output, act.Mean2.View, act.Rstd2.View, act.OutSum.View, p["output.LayerNorm.weight"], p["output.LayerNorm.bias"], n, h, eps);
    }

    /// <summary>
    /// Backward of <see cref="BlockForward"/>. On entry <paramref name="dStream"/> (N, H) holds the gradient at the
    /// block's output; on return, at its input. Parameter gradients accumulate into <paramref name="grads"/>.
    /// </summary>
    public void BlockBackward(AcceleratorStream s, MicroBatch mb, LayerLayout layer, ArrayView<T> parameters, ArrayView<float> grads,
        ArrayView<T> input, ArrayView<T> dStream, IBlockActivations activations, IModelScratch modelScratch, MicroBatchInputs inputs,
        bool parameterGradients = true)
    {
        var act = (BertBlockActivations<T>)activations;
        var scratch = (BertScratch<T>)modelScratch;
        var p = new LayerViews<T>(layer, parameters);
        var g = new LayerViews<float>(layer, grads);
        int n = mb.Tokens, h = Config.HiddenSize, i = Config.IntermediateSize;
        var dLn = scratch.DLn.View;
        var dFc = scratch.DWide.View.SubView(0, (long)n * i);

        // Output LayerNorm; dStream becomes the gradient at out-sum = x1 + dense(gelu).
        _ln.Backward(s, dStream, g["output.LayerNorm.weight"], g["output.LayerNorm.bias"], dStream, act.OutSum.View,
            p["output.LayerNorm.weight"], act.Mean2.View, act.Rstd2.View, n, h, accumulateInput: false);
        // With dropout the dense output's gradient is the masked one, held in dLn until dLn is needed.
        var dOut = dStream;
        if (ResidualRate > 0)
        {
            dOut = dLn;
            Dropout(s, dOut, dStream, ResidualRate, layer.Index, OutputSite);
        }
        _gemm.Gemm(s, dFc, dOut, p["output.dense.weight"], n, i, h, GemmLayout.NN);
        if (parameterGradients)
        {
            _gemm.Gemm(s, g["output.dense.weight"], dOut, act.Gelu.View, h, i, n, GemmLayout.TN, accumulate: true);
            _gemm.BiasBackward(s, g["output.dense.bias"], dOut, n, h);
        }
        _gelu.BackwardErf(s, dFc, dFc, act.Fc.View);
        _gemm.Gemm(s, dLn, dFc, p["intermediate.dense.weight"], n, h, i, GemmLayout.NN);
        if (parameterGradients)
        {
            _gemm.Gemm(s, g["intermediate.dense.weight"], dFc, act.X1.View, i, h, n, GemmLayout.TN, accumulate: true);
            _gemm.BiasBackward(s, g["intermediate.dense.bias"], dFc, n, i);
        }
        _residual.Add(s, dLn, dLn, dStream); // gradient at x1: feed-forward path + residual

        // Attention LayerNorm; dStream becomes the gradient at att-sum = x + dense(attention).
        _ln.Backward(s, dStream, g["attention.output.LayerNorm.weight"], g["attention.output.LayerNorm.bias"], dLn, act.AttSum.View,
            p["attention.output.LayerNorm.weight"], act.Mean1.View, act.Rstd1.View, n, h, accumulateInput: false);
        // The masked gradient goes in the wide scratch, free until attention's backward writes dQkv there.
        var dAttention = dStream;
        if (ResidualRate > 0)
        {
            dAttention = scratch.DWide.View.SubView(0, (long)n * h);
            Dropout(s, dAttention, dStream, ResidualRate, layer.Index, AttentionOutputSite);
        }
        _gemm.Gemm(s, dLn, dAttention, p["attention.output.dense.weight"], n, h, h, GemmLayout.NN);
        if (parameterGradients)
        {
            _gemm.Gemm(s, g["attention.output.dense.weight"], dAttention, act.AttY.View, h, h, n, GemmLayout.TN, accumulate: true);
            _gemm.BiasBackward(s, g["attention.output.dense.bias"], dAttention, n, h);
        }
        var dQkv = scratch.DWide.View.SubView(0, (long)n * 3 * h);
        AttentionBackward(s, mb, dQkv, dLn, act, scratch, inputs);
        var (wQkv, _) = Qkv(layer, parameters);
        var (dWQkv, dBQkv) = Qkv(layer, grads);
        _gemm.Gemm(s, dLn, dQkv, wQkv, n, h, 3 * h, GemmLayout.NN);
        if (parameterGradients)
        {
            _gemm.Gemm(s, dWQkv, dQkv, input, 3 * h, h, n, GemmLayout.TN, accumulate: true);
            _gemm.BiasBackward(s, dBQkv, dQkv, n, 3 * h);
        }
        _residual.Accumulate(s, dStream, dLn); // gradient at x: attention path + residual
    }

    // The one place BERT calls attention: bidirectional, keys at the padding id masked out.
    private void AttentionForward(AcceleratorStream s, MicroBatch mb, BertBlockActivations<T> act, MicroBatchInputs inputs) =>
        _attention.Forward(s, act.AttY.View, act.Lse.View, act.AttentionAcc, act.Qkv.View, default, inputs.KeyMask!.View, mb.Batch, mb.SeqLen, Config.HiddenSize, Config.Heads, causal: false);

    private void AttentionBackward(AcceleratorStream s, MicroBatch mb, ArrayView<T> dQkv, ArrayView<T> dAttY, BertBlockActivations<T> act,
        BertScratch<T> scratch, MicroBatchInputs inputs) =>
        _attention.Backward(s, dQkv, dAttY, act.Qkv.View, act.AttY.View, act.Lse.View, scratch.AttentionScratch.View, default, inputs.KeyMask!.View,
            mb.Batch, mb.SeqLen, Config.HiddenSize, Config.Heads, causal: false);

    /// <summary>The query, key and value weights as one (3H, H) matrix and their biases as one 3H vector (stored back to back).</summary>
    private (ArrayView<TE> Weight, ArrayView<TE> Bias) Qkv<TE>(LayerLayout layer, ArrayView<TE> block) where TE : unmanaged
    {
        long h = Config.HiddenSize;
        return (block.SubView(layer["attention.self.query.weight"].Offset, 3 * h * h), block.SubView(layer["attention.self.query.bias"].Offset, 3 * h));
    }

    /// <summary>
    /// The MLM head and loss, forward and backward: logits = LN(gelu(dense(x))) . word_embeddings^T + bias, cross-entropy
    /// at labelled positions scaled by <paramref name="lossScale"/>, gradients into the head, the word embedding and <paramref name="dInput"/>.
    /// </summary>
    public void HeadForwardBackward(AcceleratorStream s, MicroBatch mb, ArrayView<T> head, ArrayView<float> headGrads,
        ArrayView<T> embedding, ArrayView<float> embeddingGrads, ArrayView<T> input, MicroBatchInputs inputs,
        ArrayView<T> dInput, IModelScratch modelScratch, float lossScale)
    {
        var scratch = (BertScratch<T>)modelScratch;
        var p = new LayerViews<T>(Layout.Head, head);
        var g = new LayerViews<float>(Layout.Head, headGrads);
        var word = new LayerViews<T>(Layout.Embedding, embedding)["word_embeddings.weight"];
        var dWord = new LayerViews<float>(Layout.Embedding, embeddingGrads)["word_embeddings.weight"];
        int n = mb.Tokens, h = Config.HiddenSize, v = Config.VocabSize;
        var logits = scratch.Logits.View;
        HeadLogits(s, n, p, word, input, scratch);
        _crossEntropy.ForwardBackward(s, scratch.Losses.View, logits, logits, inputs.Targets.View, n, v, lossScale, MicroBatchInputs.IgnoreIndex);
        AccumulateLoss(s, scratch);
        _gemm.BiasBackward(s, g["bias"], logits, n, v);
        var dLn = scratch.DLn.View;
        _gemm.Gemm(s, dLn, logits, word, n, h, v, GemmLayout.NN);
        _gemm.Gemm(s, dWord, logits, scratch.HeadLn.View, v, h, n, GemmLayout.TN, accumulate: true);
        _ln.Backward(s, dLn, g["transform.LayerNorm.weight"], g["transform.LayerNorm.bias"], dLn, scratch.TransformGelu.View,
            p["transform.LayerNorm.weight"], scratch.HeadMean.View, scratch.HeadRstd.View, n, h, accumulateInput: false);
        _gelu.BackwardErf(s, dLn, dLn, scratch.Transform.View);
        _gemm.Gemm(s, dInput, dLn, p["transform.dense.weight"], n, h, h, GemmLayout.NN);
        _gemm.Gemm(s, g["transform.dense.weight"], dLn, input, h, h, n, GemmLayout.TN, accumulate: true);
        _gemm.BiasBackward(s, g["transform.dense.bias"], dLn, n, h);
    }

    /// <summary>The head and loss forward only (evaluation): adds the summed loss of labelled positions to the loss total.</summary>
    public void HeadLoss(AcceleratorStream s, MicroBatch mb, ArrayView<T> head, ArrayView<T> embedding,
        ArrayView<T> input, MicroBatchInputs inputs, IModelScratch modelScratch)
    {
        var scratch = (BertScratch<T>)modelScratch;
        var p = new LayerViews<T>(Layout.Head, head);
        var word = new LayerViews<T>(Layout.Embedding, embedding)["word_embeddings.weight"];
        int n = mb.Tokens;
        HeadLogits(s, n, p, word, input, scratch);
        _crossEntropy.Forward(s, scratch.Losses.View, scratch.Logits.View, inputs.Targets.View, n, Config.VocabSize, MicroBatchInputs.IgnoreIndex);
        AccumulateLoss(s, scratch);
    }

    private void HeadLogits(AcceleratorStream s, int n, LayerViews<T> p, ArrayView<T> word, ArrayView<T> input, BertScratch<T> scratch)
    {
        int h = Config.HiddenSize, v = Config.VocabSize;
        _gemm.Gemm(s, scratch.Transform.View, input, p["transform.dense.weight"], n, h, h, GemmLayout.NT, bias: p["transform.dense.bias"]);
        _gelu.ForwardErf(s, scratch.TransformGelu.View, scratch.Transform.View);
        _ln.Forward(s, scratch.HeadLn.View, scratch.HeadMean.View, scratch.HeadRstd.View, scratch.TransformGelu.View,
            p["transform.LayerNorm.weight"], p["transform.LayerNorm.bias"], n, h, Config.LayerNormEpsilon);
        _gemm.Gemm(s, scratch.Logits.View, scratch.HeadLn.View, word, n, v, h, GemmLayout.NT, bias: p["bias"]);
    }

    private void AccumulateLoss(AcceleratorStream s, BertScratch<T> scratch)
    {
        _reduce.Sum(s, scratch.LossSlot.View, scratch.Losses.View, scratch.Partials.View);
        _residual.Accumulate(s, scratch.LossTotal.View, scratch.LossSlot.View);
    }
}
