// The GPT-2 layers as forward/backward over one micro-batch on the device: embedding, pre-LN block, tied head + loss.
using ILGPU;
using ILGPU.Runtime;
using L2L.Backends;
using L2L.Backends.Ops;
using L2L.Model.Gpt2;

namespace L2L.Model.Device;

/// <summary>
/// GPT-2's layers over one micro-batch, enqueued on a stream, over the storage type <typeparamref name="T"/>.
/// Parameter gradients accumulate (+=) in FP32 so micro-batches sum; activation gradients are assigned, except the
/// residual stream's, which is updated in place. Every method only enqueues work: nothing here synchronizes, and
/// nothing allocates device memory except the two factories.
/// </summary>
/// <remarks>
/// With a 16-bit <typeparamref name="T"/> every kernel widens its 16-bit operands to FP32, computes and accumulates in
/// FP32 and rounds each result once into 16 bits; weight and bias gradients are summed in FP32 straight into the FP32
/// gradient block (the products read 16-bit operands and write FP32). What stays FP32 besides the gradients is listed on
/// <see cref="BlockActivations{T}"/> and <see cref="LayerScratch{T}"/>. With float every call runs the FP32 kernels, so
/// <c>GptLayers&lt;float&gt;</c> computes the very bits of the FP32 model.
/// </remarks>
/// <typeparam name="T">The storage type: float, <see cref="L2L.Kernels.Bf16"/> or <see cref="ILGPU.Half"/>.</typeparam>
public sealed class GptLayers<T> : IModelLayers<T> where T : unmanaged
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
    private const int EmbeddingSite = 0, AttentionOutputSite = 0, MlpOutputSite = 1;

    /// <summary>Loads (once per backend) every kernel group the layers use.</summary>
    public GptLayers(Backend backend, ModelLayout layout)
    {
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
    /// <exception cref="NotSupportedException">Attention-probability dropout was asked for.</exception>
    public void SetDropout(DropoutContext? context)
    {
        if (Config.UnitScaling && context is { Rates.Any: true })
            throw new NotSupportedException("Dropout is not supported by the unit-scaled GPT-2 (\"unit_scaling\": true); train it without dropout.");
        if (context is { Rates.Attention: > 0 })
            throw new NotSupportedException("attn_pdrop > 0: dropout on attention probabilities is not implemented (the attention kernels keep no probabilities to mask).");
        _dropout = context is { Rates.Any: true } ? context : null;
    }

    private float EmbeddingRate => _dropout?.Rates.Embedding ?? 0f;
    private float ResidualRate => _dropout?.Rates.Residual ?? 0f;

    /// <summary>
    /// <c>output = dropout(input)</c> with the mask of (layer, site) in the current step and micro-batch; the same
    /// call on a gradient is the backward. The micro-batch's elements are numbered from its place in the minibatch.
    /// </summary>
    private void Dropout(AcceleratorStream s, ArrayView<T> output, ArrayView<T> input, float p, int layer, int site)
    {
        var d = _dropout!.Value;
        _dropoutOps.Apply(s, output, input, p, Kernels.DropoutKernels.Key(d.Seed, d.Step, layer, site), d.MicroBatch * input.Length);
    }

    /// <summary>The parameter layout.</summary>
    public ModelLayout Layout { get; }

    /// <inheritdoc/>
    public Precision Precision { get; } = Precisions.Of<T>();

    private GptConfig Config => (GptConfig)Layout.Config;

    private UnitScales? _scales;

    /// <summary>The unit-scaled model's factors for <paramref name="mb"/>'s shape (computed once per shape).</summary>
    private UnitScales Scales(MicroBatch mb)
    {
        if (_scales is null || _scalesBatch != mb.Batch || _scalesSeq != mb.SeqLen)
        {
            _scales = UnitScales.For(Config, mb.Batch, mb.SeqLen);
            (_scalesBatch, _scalesSeq) = (mb.Batch, mb.SeqLen);
        }
        return _scales;
    }

    private int _scalesBatch, _scalesSeq;

    /// <inheritdoc/>
    public ModelInputs Inputs => Models.InputsOf(Config);

    /// <inheritdoc/>
    public bool BlocksReadInputs => Models.BlocksReadInputs(Config);

    /// <inheritdoc/>
    public IBlockActivations CreateActivations(Backend backend, MicroBatch shape, MemoryCategory category = MemoryCategory.Workspace, string name = "block") =>
        new BlockActivations<T>(backend, shape, category, name);

    /// <inheritdoc/>
    public IModelScratch CreateScratch(Backend backend, MicroBatch shape) => new LayerScratch<T>(backend, shape);

    /// <summary>output (N, C) = wte[inputs] + wpe[position]. <paramref name="embedding"/> holds the embedding layer's block.</summary>
    public void EmbeddingForward(AcceleratorStream s, MicroBatch mb, ArrayView<T> embedding, MicroBatchInputs inputs, ArrayView<T> output, IModelScratch scratch)
    {
        var p = new LayerViews<T>(Layout.Embedding, embedding);
        _embedding.Forward(s, output, inputs.Ids.View, p["wte.weight"], p["wpe.weight"], mb.Batch, mb.SeqLen, Config.Channels);
        if (Config.UnitScaling)
        {
            _residual.ScaledAdd(s, output, output, Scales(mb).EmbeddingOutput, output, 0f);
            return;
        }
        if (EmbeddingRate > 0) Dropout(s, output, output, EmbeddingRate, Layout.Embedding.Index, EmbeddingSite);
    }

    /// <summary>
    /// Embedding gradients (+=) from dOutput (N, C), the gradient at block 0's input, scattered by the
    /// uploaded plan of the micro-batch's ids. The embedding is linear, so nothing is recomputed. With embedding
    /// dropout on, <paramref name="dOutput"/> is masked in place first.
    /// </summary>
    public void EmbeddingBackward(AcceleratorStream s, MicroBatch mb, ArrayView<T> embedding, ArrayView<float> embeddingGrads,
        MicroBatchInputs inputs, ArrayView<T> dOutput, IModelScratch scratch)
    {
        var g = new LayerViews<float>(Layout.Embedding, embeddingGrads);
        if (Config.UnitScaling)
        {
            var u = Scales(mb);
            _embedding.Backward(s, g["wte.weight"], g["wpe.weight"], dOutput, inputs.ScatterPlan.View, inputs.Segments, mb.Batch, mb.SeqLen, Config.Channels,
                u.EmbeddingOutput * u.TokenGrad, u.EmbeddingOutput * u.PositionGrad);
            return;
        }
        if (EmbeddingRate > 0) Dropout(s, dOutput, dOutput, EmbeddingRate, Layout.Embedding.Index, EmbeddingSite);
        _embedding.Backward(s, g["wte.weight"], g["wpe.weight"], dOutput, inputs.ScatterPlan.View, inputs.Segments, mb.Batch, mb.SeqLen, Config.Channels);
    }

    /// <summary>
    /// One pre-LN transformer block: x1 = x + drop(proj(attn(ln_1(x)))); output = x1 + drop(mlp(ln_2(x1))), drop being
    /// resid_pdrop dropout (when on).
    /// Saves what the backward needs in <paramref name="activations"/>. <paramref name="output"/> must not alias <paramref name="input"/>.
    /// </summary>
    public void BlockForward(AcceleratorStream s, MicroBatch mb, LayerLayout layer, ArrayView<T> parameters,
        ArrayView<T> input, ArrayView<T> output, IBlockActivations activations, MicroBatchInputs inputs)
    {
        var act = (BlockActivations<T>)activations;
        var p = new LayerViews<T>(layer, parameters);
        int n = mb.Tokens, c = Config.Channels;
        if (Config.UnitScaling)
        {
            UnitBlockForward(s, mb, layer, p, input, output, act);
            return;
        }
        _ln.Forward(s, act.Ln1.View, act.Mean1.View, act.Rstd1.View, input, p["ln_1.weight"], p["ln_1.bias"], n, c, Config.LayerNormEpsilon);
        _gemm.Gemm(s, act.Qkv.View, act.Ln1.View, p["attn.c_attn.weight"], n, 3 * c, c, GemmLayout.NN, bias: p["attn.c_attn.bias"]);
        _attention.Forward(s, act.AttY.View, act.Lse.View, act.AttentionAcc, act.Qkv.View, default, default, mb.Batch, mb.SeqLen, c, Config.Heads, causal: true);
        _gemm.Gemm(s, act.X1.View, act.AttY.View, p["attn.c_proj.weight"], n, c, c, GemmLayout.NN, bias: p["attn.c_proj.bias"]);
        if (ResidualRate > 0) Dropout(s, act.X1.View, act.X1.View, ResidualRate, layer.Index, AttentionOutputSite);
        _residual.Add(s, act.X1.View, act.X1.View, input);
        _ln.Forward(s, act.Ln2.View, act.Mean2.View, act.Rstd2.View, act.X1.View, p["ln_2.weight"], p["ln_2.bias"], n, c, Config.LayerNormEpsilon);
        _gemm.Gemm(s, act.Fc.View, act.Ln2.View, p["mlp.c_fc.weight"], n, 4 * c, c, GemmLayout.NN, bias: p["mlp.c_fc.bias"]);
        _gelu.Forward(s, act.Gelu.View, act.Fc.View);
        _gemm.Gemm(s, output, act.Gelu.View, p["mlp.c_proj.weight"], n, c, 4 * c, GemmLayout.NN, bias: p["mlp.c_proj.bias"]);
        if (ResidualRate > 0) Dropout(s, output, output, ResidualRate, layer.Index, MlpOutputSite);
        _residual.Add(s, output, output, act.X1.View);
    }

    /// <summary>
    /// Backward of <see cref="BlockForward"/>. On entry <paramref name="dStream"/> (N, C) holds the
    /// gradient at the block's output; on return, at its input (updated in place). Parameter
    /// gradients accumulate into <paramref name="grads"/> (the layer's gradient block).
    /// </summary>
    public void BlockBackward(AcceleratorStream s, MicroBatch mb, LayerLayout layer, ArrayView<T> parameters, ArrayView<float> grads,
        ArrayView<T> input, ArrayView<T> dStream, IBlockActivations activations, IModelScratch modelScratch, MicroBatchInputs inputs,
        bool parameterGradients = true)
    {
        var act = (BlockActivations<T>)activations;
        var scratch = (LayerScratch<T>)modelScratch;
        var p = new LayerViews<T>(layer, parameters);
        var g = new LayerViews<float>(layer, grads);
        int n = mb.Tokens, c = Config.Channels;
        var dLn = scratch.DLn.View;
        var dGelu = scratch.DWide.View.SubView(0, (long)n * 4 * c);
        var dFc = scratch.DFc.View.SubView(0, (long)n * 4 * c);
        if (Config.UnitScaling)
        {
            UnitBlockBackward(s, mb, layer, p, g, input, dStream, act, scratch, parameterGradients);
            return;
        }

        // MLP: output = x1 + drop(gelu(ln_2(x1) . Wfc + bfc) . Wproj + bproj). With dropout the branch's gradient is
        // the masked stream gradient, held in dLn until dLn is needed (the residual path keeps dStream).
        var dMlp = dStream;
        if (ResidualRate > 0)
        {
            dMlp = dLn;
            Dropout(s, dMlp, dStream, ResidualRate, layer.Index, MlpOutputSite);
        }
        _gemm.Gemm(s, dGelu, dMlp, p["mlp.c_proj.weight"], n, 4 * c, c, GemmLayout.NT);
        if (parameterGradients)
        {
            _gemm.Gemm(s, g["mlp.c_proj.weight"], act.Gelu.View, dMlp, 4 * c, c, n, GemmLayout.TN, accumulate: true);
            _gemm.BiasBackward(s, g["mlp.c_proj.bias"], dMlp, n, c);
        }
        _gelu.Backward(s, dFc, dGelu, act.Fc.View);
        _gemm.Gemm(s, dLn, dFc, p["mlp.c_fc.weight"], n, c, 4 * c, GemmLayout.NT);
        if (parameterGradients)
        {
            _gemm.Gemm(s, g["mlp.c_fc.weight"], act.Ln2.View, dFc, c, 4 * c, n, GemmLayout.TN, accumulate: true);
            _gemm.BiasBackward(s, g["mlp.c_fc.bias"], dFc, n, 4 * c);
        }
        _ln.Backward(s, dStream, g["ln_2.weight"], g["ln_2.bias"], dLn, act.X1.View, p["ln_2.weight"], act.Mean2.View, act.Rstd2.View, n, c, accumulateInput: true);

        // Attention: x1 = x + drop(attn(ln_1(x)) . Wproj + bproj); the masked gradient goes in dFc, free by now.
        var dAttention = dStream;
        if (ResidualRate > 0)
        {
            dAttention = scratch.DFc.View.SubView(0, (long)n * c);
            Dropout(s, dAttention, dStream, ResidualRate, layer.Index, AttentionOutputSite);
        }
        _gemm.Gemm(s, dLn, dAttention, p["attn.c_proj.weight"], n, c, c, GemmLayout.NT);
        if (parameterGradients)
        {
            _gemm.Gemm(s, g["attn.c_proj.weight"], act.AttY.View, dAttention, c, c, n, GemmLayout.TN, accumulate: true);
            _gemm.BiasBackward(s, g["attn.c_proj.bias"], dAttention, n, c);
        }
        var dQkv = scratch.DWide.View.SubView(0, (long)n * 3 * c);
        _attention.Backward(s, dQkv, dLn, act.Qkv.View, act.AttY.View, act.Lse.View, scratch.AttentionScratch.View, default, default, mb.Batch, mb.SeqLen, c, Config.Heads, causal: true);
        _gemm.Gemm(s, dLn, dQkv, p["attn.c_attn.weight"], n, c, 3 * c, GemmLayout.NT);
        if (parameterGradients)
        {
            _gemm.Gemm(s, g["attn.c_attn.weight"], act.Ln1.View, dQkv, c, 3 * c, n, GemmLayout.TN, accumulate: true);
            _gemm.BiasBackward(s, g["attn.c_attn.bias"], dQkv, n, 3 * c);
        }
        _ln.Backward(s, dStream, g["ln_1.weight"], g["ln_1.bias"], dLn, input, p["ln_1.weight"], act.Mean1.View, act.Rstd1.View, n, c, accumulateInput: true);
    }

    /// <summary>
    /// The tied LM head and the loss, forward and backward in one pass: logits = ln_f(x) . wte^T,
    /// mean cross-entropy against the uploaded targets scaled by <paramref name="lossScale"/>
    /// (1 / labelled targets in the whole minibatch), the summed loss added to <c>scratch.LossTotal</c>,
    /// head and wte gradients accumulated, and the gradient at the head's input written to <paramref name="dInput"/>.
    /// </summary>
    public void HeadForwardBackward(AcceleratorStream s, MicroBatch mb, ArrayView<T> head, ArrayView<float> headGrads,
        ArrayView<T> embedding, ArrayView<float> embeddingGrads, ArrayView<T> input, MicroBatchInputs inputs,
        ArrayView<T> dInput, IModelScratch modelScratch, float lossScale)
    {
        var scratch = (LayerScratch<T>)modelScratch;
        var targets = inputs.Targets.View;
        var p = new LayerViews<T>(Layout.Head, head);
        var g = new LayerViews<float>(Layout.Head, headGrads);
        var wte = new LayerViews<T>(Layout.Embedding, embedding)["wte.weight"];
        var dWte = new LayerViews<float>(Layout.Embedding, embeddingGrads)["wte.weight"];
        int n = mb.Tokens, c = Config.Channels, v = Config.VocabSize;
        var logits = scratch.Logits.View;
        if (Config.UnitScaling)
        {
            var u = Scales(mb);
            _ln.Forward(s, scratch.Lnf.View, scratch.MeanF.View, scratch.RstdF.View, input, p["ln_f.weight"], p["ln_f.bias"], n, c, Config.LayerNormEpsilon);
            _gemm.Gemm(s, logits, scratch.Lnf.View, wte, n, v, c, GemmLayout.NT, alpha: u.Head.Output);
            // lossScale is (loss scale) / (labelled targets of the minibatch); the unit-scaled gradient is per token, not per mean.
            var dLogitsScale = lossScale * Math.Max(1, inputs.Labelled) * u.CrossEntropyGrad;
            _crossEntropy.ForwardBackward(s, scratch.Losses.View, logits, logits, targets, n, v, dLogitsScale, MicroBatchInputs.IgnoreIndex);
            AccumulateLoss(s, scratch);
            _gemm.Gemm(s, scratch.DLn.View, logits, wte, n, c, v, GemmLayout.NN, alpha: u.Head.InputGrad);
            _gemm.Gemm(s, dWte, logits, scratch.Lnf.View, v, c, n, GemmLayout.TN, accumulate: true, alpha: u.Head.WeightGrad);
            _ln.Backward(s, dInput, g["ln_f.weight"], g["ln_f.bias"], scratch.DLn.View, input, p["ln_f.weight"], scratch.MeanF.View, scratch.RstdF.View, n, c,
                accumulateInput: false, paramGradScale: u.LayerNormParamGrad);
            return;
        }
        _ln.Forward(s, scratch.Lnf.View, scratch.MeanF.View, scratch.RstdF.View, input, p["ln_f.weight"], p["ln_f.bias"], n, c, Config.LayerNormEpsilon);
        _gemm.Gemm(s, logits, scratch.Lnf.View, wte, n, v, c, GemmLayout.NT);
        _crossEntropy.ForwardBackward(s, scratch.Losses.View, logits, logits, targets, n, v, lossScale, MicroBatchInputs.IgnoreIndex);
        AccumulateLoss(s, scratch);
        _gemm.Gemm(s, scratch.DLn.View, logits, wte, n, c, v, GemmLayout.NN);
        _gemm.Gemm(s, dWte, logits, scratch.Lnf.View, v, c, n, GemmLayout.TN, accumulate: true);
        _ln.Backward(s, dInput, g["ln_f.weight"], g["ln_f.bias"], scratch.DLn.View, input, p["ln_f.weight"], scratch.MeanF.View, scratch.RstdF.View, n, c, accumulateInput: false);
    }

    /// <summary>The head and loss forward only (evaluation): adds the summed loss to <c>scratch.LossTotal</c>.</summary>
    public void HeadLoss(AcceleratorStream s, MicroBatch mb, ArrayView<T> head, ArrayView<T> embedding,
        ArrayView<T> input, MicroBatchInputs inputs, IModelScratch modelScratch)
    {
        var scratch = (LayerScratch<T>)modelScratch;
        var targets = inputs.Targets.View;
        var p = new LayerViews<T>(Layout.Head, head);
        var wte = new LayerViews<T>(Layout.Embedding, embedding)["wte.weight"];
        int n = mb.Tokens, c = Config.Channels, v = Config.VocabSize;
        _ln.Forward(s, scratch.Lnf.View, scratch.MeanF.View, scratch.RstdF.View, input, p["ln_f.weight"], p["ln_f.bias"], n, c, Config.LayerNormEpsilon);
        _gemm.Gemm(s, scratch.Logits.View, scratch.Lnf.View, wte, n, v, c, GemmLayout.NT, alpha: Config.UnitScaling ? Scales(mb).Head.Output : 1f);
        _crossEntropy.Forward(s, scratch.Losses.View, scratch.Logits.View, targets, n, v, MicroBatchInputs.IgnoreIndex);
        AccumulateLoss(s, scratch);
    }

    /// <summary>
    /// The unit-scaled block (see <see cref="UnitScales"/>): x1 = a1·x + b1·(αp·s·attn(ln_1(x)·αq·Wq + bq)·Wp + bp), output = a2·x1 +
    /// b2·(αd·g·gelu(ln_2(x1)·αu·Wu + bu)·Wd + bd). The attention (s) and GELU (g) factors are folded into the products that read
    /// those outputs, so the saved activations are the plain ops' outputs.
    /// </summary>
    private void UnitBlockForward(AcceleratorStream s, MicroBatch mb, LayerLayout layer, LayerViews<T> p, ArrayView<T> input, ArrayView<T> output,
        BlockActivations<T> act)
    {
        var u = Scales(mb);
        var (attnAdd, mlpAdd) = u.Residual(layer.Index - Layout.Blocks[0].Index);
        int n = mb.Tokens, c = Config.Channels;
        _ln.Forward(s, act.Ln1.View, act.Mean1.View, act.Rstd1.View, input, p["ln_1.weight"], p["ln_1.bias"], n, c, Config.LayerNormEpsilon);
        _gemm.Gemm(s, act.Qkv.View, act.Ln1.View, p["attn.c_attn.weight"], n, 3 * c, c, GemmLayout.NN, bias: p["attn.c_attn.bias"], alpha: u.QkvProjection.Output);
        _attention.Forward(s, act.AttY.View, act.Lse.View, act.AttentionAcc, act.Qkv.View, default, default, mb.Batch, mb.SeqLen, c, Config.Heads, causal: true);
        _gemm.Gemm(s, act.X1.View, act.AttY.View, p["attn.c_proj.weight"], n, c, c, GemmLayout.NN, bias: p["attn.c_proj.bias"],
            alpha: u.AttentionProjection.Output * u.Attention);
        _residual.ScaledAdd(s, act.X1.View, input, attnAdd.Skip, act.X1.View, attnAdd.Branch);
        _ln.Forward(s, act.Ln2.View, act.Mean2.View, act.Rstd2.View, act.X1.View, p["ln_2.weight"], p["ln_2.bias"], n, c, Config.LayerNormEpsilon);
        _gemm.Gemm(s, act.Fc.View, act.Ln2.View, p["mlp.c_fc.weight"], n, 4 * c, c, GemmLayout.NN, bias: p["mlp.c_fc.bias"], alpha: u.MlpUp.Output);
        _gelu.Forward(s, act.Gelu.View, act.Fc.View);
        _gemm.Gemm(s, output, act.Gelu.View, p["mlp.c_proj.weight"], n, c, 4 * c, GemmLayout.NN, bias: p["mlp.c_proj.bias"], alpha: u.MlpDown.Output * u.Gelu);
        _residual.ScaledAdd(s, output, act.X1.View, mlpAdd.Skip, output, mlpAdd.Branch);
    }

    /// <summary>
    /// Backward of <see cref="UnitBlockForward"/>. Each branch receives the stream gradient unscaled; at each split the
    /// LayerNorm's input gradient (written over dLn) joins the skip path as dx = SkipGrad·dy + BranchGrad·dLn.
    /// </summary>
    private void UnitBlockBackward(AcceleratorStream s, MicroBatch mb, LayerLayout layer, LayerViews<T> p, LayerViews<float> g, ArrayView<T> input,
        ArrayView<T> dStream, BlockActivations<T> act, LayerScratch<T> scratch, bool parameterGradients)
    {
        var u = Scales(mb);
        var (attnAdd, mlpAdd) = u.Residual(layer.Index - Layout.Blocks[0].Index);
        int n = mb.Tokens, c = Config.Channels;
        var dLn = scratch.DLn.View;
        var dGelu = scratch.DWide.View.SubView(0, (long)n * 4 * c);
        var dFc = scratch.DFc.View.SubView(0, (long)n * 4 * c);

        // MLP branch; dGelu is the gradient at the plain GELU's output (the GELU factor g folded in).
        _gemm.Gemm(s, dGelu, dStream, p["mlp.c_proj.weight"], n, 4 * c, c, GemmLayout.NT, alpha: u.MlpDown.InputGrad * u.Gelu);
        if (parameterGradients)
        {
            _gemm.Gemm(s, g["mlp.c_proj.weight"], act.Gelu.View, dStream, 4 * c, c, n, GemmLayout.TN, accumulate: true, alpha: u.MlpDown.WeightGrad * u.Gelu);
            _gemm.BiasBackward(s, g["mlp.c_proj.bias"], dStream, n, c, u.MlpDown.WeightGrad);
        }
        _gelu.Backward(s, dFc, dGelu, act.Fc.View);
        _gemm.Gemm(s, dLn, dFc, p["mlp.c_fc.weight"], n, c, 4 * c, GemmLayout.NT, alpha: u.MlpUp.InputGrad);
        if (parameterGradients)
        {
            _gemm.Gemm(s, g["mlp.c_fc.weight"], act.Ln2.View, dFc, c, 4 * c, n, GemmLayout.TN, accumulate: true, alpha: u.MlpUp.WeightGrad);
            _gemm.BiasBackward(s, g["mlp.c_fc.bias"], dFc, n, 4 * c, u.MlpUp.WeightGrad);
        }
        _ln.Backward(s, dLn, g["ln_2.weight"], g["ln_2.bias"], dLn, act.X1.View, p["ln_2.weight"], act.Mean2.View, act.Rstd2.View, n, c,
            accumulateInput: false, paramGradScale: u.LayerNormParamGrad);
        _residual.ScaledAdd(s, dStream, dStream, mlpAdd.SkipGrad, dLn, mlpAdd.BranchGrad);

        // Attention branch; the kernel's output gradient is the one at the plain attention's output (the factor s folded in).
        _gemm.Gemm(s, dLn, dStream, p["attn.c_proj.weight"], n, c, c, GemmLayout.NT, alpha: u.AttentionProjection.InputGrad * u.Attention);
        if (parameterGradients)
        {
            _gemm.Gemm(s, g["attn.c_proj.weight"], act.AttY.View, dStream, c, c, n, GemmLayout.TN, accumulate: true,
                alpha: u.AttentionProjection.WeightGrad * u.Attention);
            _gemm.BiasBackward(s, g["attn.c_proj.bias"], dStream, n, c, u.AttentionProjection.WeightGrad);
        }
        var dQkv = scratch.DWide.View.SubView(0, (long)n * 3 * c);
        _attention.Backward(s, dQkv, dLn, act.Qkv.View, act.AttY.View, act.Lse.View, scratch.AttentionScratch.View, default, default, mb.Batch, mb.SeqLen, c, Config.Heads, causal: true);
        _gemm.Gemm(s, dLn, dQkv, p["attn.c_attn.weight"], n, c, 3 * c, GemmLayout.NT, alpha: u.QkvProjection.InputGrad);
        if (parameterGradients)
        {
            _gemm.Gemm(s, g["attn.c_attn.weight"], act.Ln1.View, dQkv, c, 3 * c, n, GemmLayout.TN, accumulate: true, alpha: u.QkvProjection.WeightGrad);
            _gemm.BiasBackward(s, g["attn.c_attn.bias"], dQkv, n, 3 * c, u.QkvProjection.WeightGrad);
        }
        _ln.Backward(s, dLn, g["ln_1.weight"], g["ln_1.bias"], dLn, input, p["ln_1.weight"], act.Mean1.View, act.Rstd1.View, n, c,
            accumulateInput: false, paramGradScale: u.LayerNormParamGrad);
        _residual.ScaledAdd(s, dStream, dStream, attnAdd.SkipGrad, dLn, attnAdd.BranchGrad);
    }

    private void AccumulateLoss(AcceleratorStream s, LayerScratch<T> scratch)
    {
        _reduce.Sum(s, scratch.LossSlot.View, scratch.Losses.View, scratch.Partials.View);
        _residual.Accumulate(s, scratch.LossTotal.View, scratch.LossSlot.View);
    }
}
