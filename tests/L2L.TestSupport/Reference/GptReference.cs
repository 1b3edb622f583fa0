// Double-precision GPT-2 forward and backward with explicit scale factors: the standard model, and the unit-scaled one
// (Blake et al., arXiv 2303.11257) with its scales derived here from the rules, independently of the engine's code.
using L2L.Backends.Ops;

namespace L2L.TestSupport.Reference;

/// <summary>
/// GPT-2 (pre-LN blocks, tied head) in plain double loops, every op carrying the factors of a <see cref="Scales"/>.
/// Letters: B sequences, T positions, N = B·T rows, C channels, NH heads, V vocabulary. Parameters are Hugging Face
/// GPT-2 names (<c>wte.weight</c>, <c>h.{i}.attn.c_attn.weight</c> [C, 3C] as [in, out], …, <c>ln_f.weight</c>).
/// The backward is the one the scale rules define (each op's own backward factors), which for a unit-scaled model is
/// not the plain gradient of its forward: that is what the engine must reproduce.
/// </summary>
public static class GptReference
{
    /// <summary>Model and micro-batch sizes.</summary>
    public sealed record Dims(int Vocab, int Channels, int Heads, int Layers, int MaxPositions, int Batch, int Seq, double Eps = 1e-5)
    {
        /// <summary>Rows of a micro-batch, N = B·T.</summary>
        public int Rows => Batch * Seq;
    }

    /// <summary>A matmul's factors: output, input gradient, weight (and bias) gradient.</summary>
    public readonly record struct Matmul(double Output, double InputGrad, double WeightGrad)
    {
        /// <summary>1/√fan_in, 1/√fan_out, 1/√rows.</summary>
        public static Matmul Unit(int fanIn, int fanOut, int rows) => new(1 / Math.Sqrt(fanIn), 1 / Math.Sqrt(fanOut), 1 / Math.Sqrt(rows));
    }

    /// <summary>A residual add: forward <c>Skip·x + Branch·f</c>; backward <c>SkipGrad·dy + BranchGrad·d(branch input)</c>.</summary>
    public readonly record struct Residual(double Skip, double Branch, double SkipGrad, double BranchGrad);

    /// <summary>Every factor of the model.</summary>
    public sealed record Scales(bool Unit, double Embedding, double TokenGrad, double PositionGrad, Matmul Qkv, Matmul Proj, Matmul Up, Matmul Down,
        Matmul Head, double Attention, double Gelu, double LayerNormGrad, Residual[] Adds)
    {
        /// <summary>The standard GPT-2: all factors 1, plain residual sums, the mean loss's gradient.</summary>
        public static Scales Standard(Dims d)
        {
            var one = new Matmul(1, 1, 1);
            return new Scales(false, 1, 1, 1, one, one, one, one, one, 1, 1, 1,
                Enumerable.Repeat(new Residual(1, 1, 1, 1), 2 * d.Layers).ToArray());
        }

        /// <summary>The unit-scaled GPT-2's factors, derived from the rules.</summary>
        public static Scales UnitScaled(Dims d)
        {
            int c = d.Channels, n = d.Rows;
            // Attention: one factor for output and gradient, the geometric mean of the two ideal ones. Per causal row of
            // n keys, output (and v-gradient) variance E[sum p^2] ~ e/(n+e-1); q/k-gradient variance m2 - 2 m3 + m2^2, m3 ~ e^3/((n+e^3-1) n).
            var m2s = Enumerable.Range(1, d.Seq).Select(keys => Math.E / (keys + Math.E - 1)).ToArray();
            var m3s = Enumerable.Range(1, d.Seq).Select(keys => Math.Exp(3) / ((keys + Math.Exp(3) - 1) * keys)).ToArray();
            var forward = m2s.Average();
            var qk = m2s.Zip(m3s).Average(m => Math.Max(0, m.First - 2 * m.Second + m.First * m.First));
            var attention = Math.Pow(forward * (2 * qk + forward) / 3, -0.25);
            var adds = new Residual[2 * d.Layers];
            for (var k = 0; k < adds.Length; k++)
            {
                // Attention adds: tau 0.01; MLP adds: running mean, tau = 1/(block + 2). The attention branch's gradient runs
                // 1/sqrt(3) below its forward (C -> 3C), undone at the split; kappa renormalises the sum.
                var attentionAdd = k % 2 == 0;
                var tau = attentionAdd ? 0.01 : 1.0 / (k / 2 + 2);
                double a = Math.Sqrt(1 - tau), b = Math.Sqrt(tau);
                var bg = attentionAdd ? b * Math.Sqrt(3) : b;
                var kappa = 1 / Math.Sqrt(a * a + bg * bg);
                adds[k] = new Residual(a, b, kappa * a, kappa * bg);
            }
            return new Scales(true, 1 / Math.Sqrt(2), Math.Sqrt((double)d.Vocab / n), 1 / Math.Sqrt(d.Batch),
                Matmul.Unit(c, 3 * c, n), Matmul.Unit(c, c, n), Matmul.Unit(c, 4 * c, n), Matmul.Unit(4 * c, c, n), Matmul.Unit(c, d.Vocab, n),
                attention, GeluFactor(), 1 / Math.Sqrt(n), adds);
        }

        // 1 / sqrt(std of gelu(x) * RMS of gelu'(x)), x ~ N(0, 1), by a midpoint sum over [-12, 12].
        private static double GeluFactor()
        {
            const int steps = 48000;
            var xs = Enumerable.Range(0, steps).Select(i => -12 + (i + 0.5) * 24.0 / steps).ToArray();
            var w = xs.Select(x => 24.0 / steps * Math.Exp(-0.5 * x * x) / Math.Sqrt(2 * Math.PI)).ToArray();
            var g = GeluReference.Forward(xs);
            var dg = GeluReference.Backward(Enumerable.Repeat(1.0, steps).ToArray(), xs);
            double m1 = 0, m2 = 0, d2 = 0;
            for (var i = 0; i < steps; i++) { m1 += w[i] * g[i]; m2 += w[i] * g[i] * g[i]; d2 += w[i] * dg[i] * dg[i]; }
            return 1 / Math.Sqrt(Math.Sqrt(m2 - m1 * m1) * Math.Sqrt(d2));
        }
    }

    /// <summary>What a block's forward computed, op by op (each op's output as the next op sees it).</summary>
    public sealed class BlockTrace
    {
        internal BlockTrace(int block, double[] input) { Block = block; Input = input; }
        /// <summary>Block index.</summary>
        public int Block { get; }
        /// <summary>The block's input x (N, C).</summary>
        public double[] Input { get; }
        /// <summary>Op outputs in forward order: ln_1, attn.c_attn, attn, attn.c_proj, residual_1, ln_2, mlp.c_fc, mlp.gelu, mlp.c_proj, residual_2.</summary>
        public Dictionary<string, double[]> Outputs { get; } = new(StringComparer.Ordinal);
        internal double[] Probs = [];
        internal double[] Fc = [];
        internal double[] Attention = [];
    }

    /// <summary>What a block's backward computed.</summary>
    /// <param name="DInput">The gradient at the block's input.</param>
    /// <param name="InputGrads">The gradient at each op's input, keyed as <see cref="BlockTrace.Outputs"/>
    /// (for a residual add: at its branch input; the skip path's is <paramref name="DInput"/> or residual_1's).</param>
    /// <param name="ParamGrads">Parameter gradients by local name (<c>attn.c_attn.weight</c>, …).</param>
    public sealed record BlockGrads(double[] DInput, Dictionary<string, double[]> InputGrads, Dictionary<string, double[]> ParamGrads);

    private static double[] P(IReadOnlyDictionary<string, double[]> p, int block, string local) => p[$"h.{block}.{local}"];

    /// <summary>Block <paramref name="block"/>'s forward on <paramref name="x"/> (N, C).</summary>
    public static BlockTrace BlockForward(Dims d, Scales s, IReadOnlyDictionary<string, double[]> p, int block, double[] x)
    {
        int n = d.Rows, c = d.Channels;
        var tr = new BlockTrace(block, x);
        var (attnAdd, mlpAdd) = (s.Adds[2 * block], s.Adds[2 * block + 1]);
        var ln1 = LayerNormReference.Forward(x, P(p, block, "ln_1.weight"), P(p, block, "ln_1.bias"), n, c, d.Eps);
        var qkv = GemmReference.Gemm(ln1, P(p, block, "attn.c_attn.weight"), n, 3 * c, c, GemmLayout.NN, s.Qkv.Output, P(p, block, "attn.c_attn.bias"));
        var (o, probs) = AttentionReference.Forward(qkv, null, d.Batch, d.Seq, c, d.Heads, causal: true);
        var att = Scale(o, s.Attention);
        var f1 = GemmReference.Gemm(att, P(p, block, "attn.c_proj.weight"), n, c, c, GemmLayout.NN, s.Proj.Output, P(p, block, "attn.c_proj.bias"));
        var x1 = Combine(x, attnAdd.Skip, f1, attnAdd.Branch);
        var ln2 = LayerNormReference.Forward(x1, P(p, block, "ln_2.weight"), P(p, block, "ln_2.bias"), n, c, d.Eps);
        var fc = GemmReference.Gemm(ln2, P(p, block, "mlp.c_fc.weight"), n, 4 * c, c, GemmLayout.NN, s.Up.Output, P(p, block, "mlp.c_fc.bias"));
        var gl = Scale(GeluReference.Forward(fc), s.Gelu);
        var f2 = GemmReference.Gemm(gl, P(p, block, "mlp.c_proj.weight"), n, c, 4 * c, GemmLayout.NN, s.Down.Output, P(p, block, "mlp.c_proj.bias"));
        var y = Combine(x1, mlpAdd.Skip, f2, mlpAdd.Branch);
        foreach (var (name, value) in new[] { ("ln_1", ln1), ("attn.c_attn", qkv), ("attn", att), ("attn.c_proj", f1), ("residual_1", x1),
                     ("ln_2", ln2), ("mlp.c_fc", fc), ("mlp.gelu", gl), ("mlp.c_proj", f2), ("residual_2", y) })
            tr.Outputs[name] = value;
        tr.Probs = probs;
        tr.Fc = fc;
        tr.Attention = att;
        return tr;
    }

    /// <summary>The backward of <see cref="BlockForward"/> from <paramref name="dy"/>, the gradient at its output.</summary>
    public static BlockGrads BlockBackward(Dims d, Scales s, IReadOnlyDictionary<string, double[]> p, BlockTrace tr, double[] dy)
    {
        int n = d.Rows, c = d.Channels, block = tr.Block;
        var (attnAdd, mlpAdd) = (s.Adds[2 * block], s.Adds[2 * block + 1]);
        var o = tr.Outputs;
        var pg = new Dictionary<string, double[]>(StringComparer.Ordinal);
        var ig = new Dictionary<string, double[]>(StringComparer.Ordinal);

        // MLP branch: it receives dy as it is.
        ig["residual_2"] = dy;
        pg["mlp.c_proj.weight"] = GemmReference.Gemm(o["mlp.gelu"], dy, 4 * c, c, n, GemmLayout.TN, s.Down.WeightGrad);
        pg["mlp.c_proj.bias"] = Scale(GemmReference.BiasBackward(dy, n, c), s.Down.WeightGrad);
        var dGelu = GemmReference.Gemm(dy, P(p, block, "mlp.c_proj.weight"), n, 4 * c, c, GemmLayout.NT, s.Down.InputGrad);
        ig["mlp.c_proj"] = dGelu;
        var dFc = Scale(GeluReference.Backward(dGelu, tr.Fc), s.Gelu);
        ig["mlp.gelu"] = dFc;
        pg["mlp.c_fc.weight"] = GemmReference.Gemm(o["ln_2"], dFc, c, 4 * c, n, GemmLayout.TN, s.Up.WeightGrad);
        pg["mlp.c_fc.bias"] = Scale(GemmReference.BiasBackward(dFc, n, 4 * c), s.Up.WeightGrad);
        var dLn2 = GemmReference.Gemm(dFc, P(p, block, "mlp.c_fc.weight"), n, c, 4 * c, GemmLayout.NT, s.Up.InputGrad);
        ig["mlp.c_fc"] = dLn2;
        var (dX1Branch, dW2, dB2) = LayerNormReference.Backward(dLn2, o["residual_1"], P(p, block, "ln_2.weight"), n, c, d.Eps);
        ig["ln_2"] = dX1Branch;
        pg["ln_2.weight"] = Scale(dW2, s.LayerNormGrad);
        pg["ln_2.bias"] = Scale(dB2, s.LayerNormGrad);
        var dX1 = Combine(dy, mlpAdd.SkipGrad, dX1Branch, mlpAdd.BranchGrad);

        // Attention branch.
        ig["residual_1"] = dX1;
        pg["attn.c_proj.weight"] = GemmReference.Gemm(tr.Attention, dX1, c, c, n, GemmLayout.TN, s.Proj.WeightGrad);
        pg["attn.c_proj.bias"] = Scale(GemmReference.BiasBackward(dX1, n, c), s.Proj.WeightGrad);
        var dAtt = GemmReference.Gemm(dX1, P(p, block, "attn.c_proj.weight"), n, c, c, GemmLayout.NT, s.Proj.InputGrad);
        ig["attn.c_proj"] = dAtt;
        var dQkv = Scale(AttentionReference.Backward(dAtt, o["attn.c_attn"], tr.Probs, null, d.Batch, d.Seq, c, d.Heads, causal: true), s.Attention);
        ig["attn"] = dQkv;
        pg["attn.c_attn.weight"] = GemmReference.Gemm(o["ln_1"], dQkv, c, 3 * c, n, GemmLayout.TN, s.Qkv.WeightGrad);
        pg["attn.c_attn.bias"] = Scale(GemmReference.BiasBackward(dQkv, n, 3 * c), s.Qkv.WeightGrad);
        var dLn1 = GemmReference.Gemm(dQkv, P(p, block, "attn.c_attn.weight"), n, c, 3 * c, GemmLayout.NT, s.Qkv.InputGrad);
        ig["attn.c_attn"] = dLn1;
        var (dXBranch, dW1, dB1) = LayerNormReference.Backward(dLn1, tr.Input, P(p, block, "ln_1.weight"), n, c, d.Eps);
        ig["ln_1"] = dXBranch;
        pg["ln_1.weight"] = Scale(dW1, s.LayerNormGrad);
        pg["ln_1.bias"] = Scale(dB1, s.LayerNormGrad);
        return new BlockGrads(Combine(dX1, attnAdd.SkipGrad, dXBranch, attnAdd.BranchGrad), ig, pg);
    }

    /// <summary>
    /// The whole model on one micro-batch of <paramref name="ids"/> (N) and <paramref name="targets"/> (N, −1 where
    /// unlabelled) with sizes <paramref name="d"/>, factors <paramref name="s"/> and parameters <paramref name="p"/>:
    /// the mean loss over labelled targets and every parameter's gradient by full name.
    /// </summary>
    public static (double Loss, Dictionary<string, double[]> Grads) ForwardBackward(Dims d, Scales s, IReadOnlyDictionary<string, double[]> p, int[] ids, int[] targets)
    {
        int n = d.Rows, c = d.Channels, v = d.Vocab;
        var x = Scale(EmbeddingReference.Forward(ids, p["wte.weight"], p["wpe.weight"], d.Batch, d.Seq, c), s.Embedding);
        var traces = new BlockTrace[d.Layers];
        for (var l = 0; l < d.Layers; l++)
        {
            traces[l] = BlockForward(d, s, p, l, x);
            x = traces[l].Outputs["residual_2"];
        }
        var lnf = LayerNormReference.Forward(x, p["ln_f.weight"], p["ln_f.bias"], n, c, d.Eps);
        var logits = GemmReference.Gemm(lnf, p["wte.weight"], n, v, c, GemmLayout.NT, s.Head.Output);
        var labelled = targets.Count(t => t >= 0);
        var loss = CrossEntropyReference.Losses(logits, targets, n, v).Sum() / labelled;
        var dLogits = CrossEntropyReference.DLogits(logits, targets, n, v, s.Unit ? v / Math.Sqrt(v - 1) : 1.0 / labelled);

        var grads = new Dictionary<string, double[]>(StringComparer.Ordinal);
        var dWte = GemmReference.Gemm(dLogits, lnf, v, c, n, GemmLayout.TN, s.Head.WeightGrad);
        var dLnf = GemmReference.Gemm(dLogits, p["wte.weight"], n, c, v, GemmLayout.NN, s.Head.InputGrad);
        var (dx, dWf, dBf) = LayerNormReference.Backward(dLnf, x, p["ln_f.weight"], n, c, d.Eps);
        grads["ln_f.weight"] = Scale(dWf, s.LayerNormGrad);
        grads["ln_f.bias"] = Scale(dBf, s.LayerNormGrad);
        for (var l = d.Layers - 1; l >= 0; l--)
        {
            var bg = BlockBackward(d, s, p, traces[l], dx);
            foreach (var (name, g) in bg.ParamGrads) grads[$"h.{l}.{name}"] = g;
            dx = bg.DInput;
        }
        var (eWte, eWpe) = EmbeddingReference.Backward(dx, ids, d.Batch, d.Seq, c, v, d.MaxPositions);
        grads["wte.weight"] = Combine(dWte, 1, eWte, s.Embedding * s.TokenGrad);
        grads["wpe.weight"] = Scale(eWpe, s.Embedding * s.PositionGrad);
        return (loss, grads);
    }

    private static double[] Scale(double[] x, double factor) => factor == 1 ? x : x.Select(value => value * factor).ToArray();

    private static double[] Combine(double[] a, double wa, double[] b, double wb)
    {
        var result = new double[a.Length];
        for (var i = 0; i < a.Length; i++) result[i] = wa * a[i] + wb * b[i];
        return result;
    }
}
