// The fixed scale factors of a unit-scaled GPT-2 (Blake et al., arXiv 2303.11257), for one model and micro-batch shape.
namespace L2L.Model.Gpt2;

/// <summary>
/// Every scale a unit-scaled GPT-2 applies, from the model's sizes and the micro-batch shape (B sequences of T
/// tokens, N = B·T). With unit-variance inputs, weights and output gradients, each op's output and each gradient it
/// passes back then have roughly unit variance at initialisation. <see cref="Standard"/> is the plain GPT-2: every
/// factor 1 (and its residual adds plain sums), so the same code path computes both models.
/// </summary>
/// <remarks>
/// <para>Matmuls <c>y = x·W</c> with <c>W</c> (fan_in, fan_out): output × 1/√fan_in, input gradient × 1/√fan_out,
/// weight and bias gradients × 1/√N. Input and output scales differ, so along a residual branch the gradient drifts
/// from the gradient of the forward function by the product of the ratios: 1 for the MLP (C→4C then 4C→C) and
/// 1/√3 for attention (C→3C, then C→C). The residual split undoes that ratio (<see cref="Residual"/>), so the
/// gradient every block passes back is the true gradient of the scaled forward, up to one constant per residual add.</para>
/// <para>Ops without weights use one factor forward and backward, as a gradient-consistent op must: attention
/// (<see cref="Attention"/>) and GELU (<see cref="Gelu"/>). LayerNorm's parameter gradients × 1/√N; its input
/// gradient is unscaled. The embedding sums two unit tables, so its output (and both tables' gradients) × 1/√2, and
/// the tables' gradients × √(V/N) for <c>wte</c> (a row is hit N/V times on average) and × 1/√B for <c>wpe</c> (each
/// row exactly B times). The loss gradient per token is <c>(softmax − onehot) · V/√(V−1)</c>, which has unit variance
/// for unit logits, and is not divided by the number of tokens.</para>
/// </remarks>
public sealed record UnitScales
{
    /// <summary>Forward and backward factors of one matmul.</summary>
    /// <param name="Output">Multiplies <c>x·W</c> (1/√fan_in); the bias is added after, unscaled.</param>
    /// <param name="InputGrad">Multiplies <c>dY·Wᵀ</c> (1/√fan_out).</param>
    /// <param name="WeightGrad">Multiplies <c>xᵀ·dY</c> and the bias gradient (1/√N).</param>
    public readonly record struct Matmul(float Output, float InputGrad, float WeightGrad)
    {
        /// <summary>No scaling.</summary>
        public static Matmul One => new(1f, 1f, 1f);

        internal static Matmul Of(int fanIn, int fanOut, int tokens) =>
            new((float)(1 / Math.Sqrt(fanIn)), (float)(1 / Math.Sqrt(fanOut)), (float)(1 / Math.Sqrt(tokens)));
    }

    /// <summary>One residual add <c>y = Skip·x + Branch·f(x)</c> and the backward at its split.</summary>
    /// <param name="Skip">Forward weight of the skip path, √(1−τ).</param>
    /// <param name="Branch">Forward weight of the branch, √τ. The branch itself receives the output gradient unscaled.</param>
    /// <param name="SkipGrad">Backward: <c>dx = SkipGrad·dy + BranchGrad·d(branch input)</c>.</param>
    /// <param name="BranchGrad">See <paramref name="SkipGrad"/>.</param>
    public readonly record struct ResidualAdd(float Skip, float Branch, float SkipGrad, float BranchGrad)
    {
        /// <summary>The plain sum <c>x + f(x)</c>.</summary>
        public static ResidualAdd Plain => new(1f, 1f, 1f, 1f);
    }

    /// <summary>True for a unit-scaled model; false for <see cref="Standard"/>.</summary>
    public bool Enabled { get; init; }

    /// <summary>The embedding sum <c>wte[id] + wpe[t]</c> is multiplied by this (and so are both tables' gradients).</summary>
    public float EmbeddingOutput { get; init; } = 1f;

    /// <summary>Multiplies <c>wte</c>'s scattered gradient (before <see cref="EmbeddingOutput"/>).</summary>
    public float TokenGrad { get; init; } = 1f;

    /// <summary>Multiplies <c>wpe</c>'s summed gradient (before <see cref="EmbeddingOutput"/>).</summary>
    public float PositionGrad { get; init; } = 1f;

    /// <summary>The fused q, k, v projection (C → 3C).</summary>
    public Matmul QkvProjection { get; init; } = Matmul.One;

    /// <summary>The attention output projection (C → C).</summary>
    public Matmul AttentionProjection { get; init; } = Matmul.One;

    /// <summary>The MLP up-projection (C → 4C).</summary>
    public Matmul MlpUp { get; init; } = Matmul.One;

    /// <summary>The MLP down-projection (4C → C).</summary>
    public Matmul MlpDown { get; init; } = Matmul.One;

    /// <summary>The tied LM head <c>ln_f(x)·wteᵀ</c> (C → V).</summary>
    public Matmul Head { get; init; } = Matmul.One;

    /// <summary>
    /// Attention's output, and the gradient it passes to q, k and v, are multiplied by this one factor: the geometric
    /// mean of the factor that makes the output unit and the one that makes the q,k,v gradient unit. With unit q and k
    /// the scores <c>q·k/√hs</c> have unit variance; for a query row with n visible keys (causal: n = t + 1) the
    /// output's variance is m2 = E[Σ_j p_j²] ≈ e/(n + e − 1), the v gradient's the same on average, and the q and k
    /// gradients' m2 − 2·m3 + m2² with m3 = E[Σ p³] ≈ e³/((n + e³ − 1)·n) (both approximations exact at n = 1 and
    /// right for large n). The scores keep GPT-2's 1/√hs: with 1/hs the scores have variance 1/hs, the q and k
    /// gradients are 1/√hs of the v gradient at initialisation, and no single gradient-consistent factor makes all three unit.
    /// </summary>
    public float Attention { get; init; } = 1f;

    /// <summary>
    /// GELU's output and input gradient are multiplied by this: 1/√(σ·ρ), the geometric mean of the two ideal factors,
    /// where σ is the standard deviation of gelu(x) and ρ the RMS of gelu'(x) for x ~ N(0, 1) (by quadrature: 0.588 and 0.675).
    /// </summary>
    public float Gelu { get; init; } = 1f;

    /// <summary>Multiplies LayerNorm's weight and bias gradients (1/√N).</summary>
    public float LayerNormParamGrad { get; init; } = 1f;

    /// <summary>The per-token loss gradient factor, V/√(V−1); a standard model uses the mean's 1/count instead.</summary>
    public float CrossEntropyGrad { get; init; } = 1f;

    /// <summary>The residual adds of block <paramref name="block"/>: after attention and after the MLP.</summary>
    public (ResidualAdd Attention, ResidualAdd Mlp) Residual(int block)
    {
        if (!Enabled) return (ResidualAdd.Plain, ResidualAdd.Plain);
        // Attention: a fixed τ = 0.01, which keeps the stream's rows nearly independent (attention mixes positions, and a
        // large attention share makes deeper blocks see correlated rows). MLP: a running mean, τ = 1/(k+1) at the k-th
        // block, so the stream after block k is the normalised sum of the embedding and the k MLP outputs, each weighted alike.
        return (Add(AttentionTau, AttentionBranchRatio), Add(1.0 / (block + 2), 1.0));
    }

    /// <summary>The residual weight τ of every attention add.</summary>
    public const double AttentionTau = 0.01;

    // The attention branch's backward/forward drift: the q,k,v projection's 1/√(3C) over its 1/√C.
    private static readonly double AttentionBranchRatio = 1 / Math.Sqrt(3);

    private static ResidualAdd Add(double tau, double ratio)
    {
        double a = Math.Sqrt(1 - tau), b = Math.Sqrt(tau);
        // The split undoes the branch's drift (b / ratio), then one factor keeps the summed gradient at unit variance.
        var branchGrad = b / ratio;
        var kappa = 1 / Math.Sqrt(a * a + branchGrad * branchGrad);
        return new ResidualAdd((float)a, (float)b, (float)(kappa * a), (float)(kappa * branchGrad));
    }

    /// <summary>The plain GPT-2: every factor 1, plain residual sums, the loss gradient as the executor gives it.</summary>
    public static UnitScales Standard { get; } = new();

    /// <summary>The scales of <paramref name="config"/> for micro-batches of <paramref name="batch"/> × <paramref name="seqLen"/> tokens.</summary>
    /// <remarks>For a model without <see cref="GptConfig.UnitScaling"/> this is <see cref="Standard"/>.</remarks>
    public static UnitScales For(GptConfig config, int batch, int seqLen)
    {
        ArgumentNullException.ThrowIfNull(config);
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(batch);
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(seqLen);
        if (!config.UnitScaling) return Standard;
        int c = config.Channels, v = config.VocabSize, n = batch * seqLen;
        var rowGrad = (float)(1 / Math.Sqrt(n));
        return new UnitScales
        {
            Enabled = true,
            EmbeddingOutput = (float)(1 / Math.Sqrt(2)),
            TokenGrad = (float)Math.Sqrt((double)v / n),
            PositionGrad = (float)(1 / Math.Sqrt(batch)),
            QkvProjection = Matmul.Of(c, 3 * c, n),
            AttentionProjection = Matmul.Of(c, c, n),
            MlpUp = Matmul.Of(c, 4 * c, n),
            MlpDown = Matmul.Of(4 * c, c, n),
            Head = Matmul.Of(c, v, n),
            Attention = (float)AttentionScale(seqLen),
            Gelu = (float)GeluScale,
            LayerNormParamGrad = rowGrad,
            CrossEntropyGrad = v > 1 ? (float)(v / Math.Sqrt(v - 1)) : 1f,
        };
    }

    /// <summary>Causal attention over <paramref name="seqLen"/> positions: query t sees t + 1 keys.</summary>
    internal static double AttentionScale(int seqLen)
    {
        double output = 0, queryKey = 0;
        var e3 = Math.Exp(3);
        for (var n = 1; n <= seqLen; n++)
        {
            var m2 = Math.E / (n + Math.E - 1);
            var m3 = e3 / ((n + e3 - 1) * n);
            output += m2;
            queryKey += Math.Max(0, m2 - 2 * m3 + m2 * m2);
        }
        output /= seqLen;
        queryKey /= seqLen;
        // The q, k and v thirds of the gradient: q and k with queryKey, v with output (a key's column sums over queries alike).
        var gradient = (2 * queryKey + output) / 3;
        return 1 / Math.Sqrt(Math.Sqrt(output * gradient));
    }

    /// <summary>1/√(std of gelu(x) · RMS of gelu'(x)) for x ~ N(0, 1), GPT-2's tanh GELU, by the trapezoid rule on [−12, 12].</summary>
    internal static readonly double GeluScale = GeluMoments().Scale;

    /// <summary>E[gelu(x)] for x ~ N(0, 1) (≈ 0.282), by the same quadrature.</summary>
    internal static readonly double GeluMean = GeluMoments().Mean;

    private static (double Scale, double Mean) GeluMoments()
    {
        const int steps = 24000;
        const double lo = -12, hi = 12, h = (hi - lo) / steps;
        double m1 = 0, m2 = 0, d2 = 0;
        for (var i = 0; i <= steps; i++)
        {
            var x = lo + i * h;
            var w = (i == 0 || i == steps ? 0.5 : 1.0) * h * Math.Exp(-0.5 * x * x) / Math.Sqrt(2 * Math.PI);
            var (g, dg) = GeluTanh(x);
            m1 += w * g;
            m2 += w * g * g;
            d2 += w * dg * dg;
        }
        var std = Math.Sqrt(m2 - m1 * m1);
        return (1 / Math.Sqrt(std * Math.Sqrt(d2)), m1);
    }

    private static (double Value, double Derivative) GeluTanh(double x)
    {
        var k = Math.Sqrt(2 / Math.PI);
        var u = k * (x + 0.044715 * x * x * x);
        var th = Math.Tanh(u);
        var du = k * (1 + 3 * 0.044715 * x * x);
        return (0.5 * x * (1 + th), 0.5 * (1 + th) + 0.5 * x * (1 - th * th) * du);
    }

    /// <summary>
    /// The learning-rate factor of tensor <paramref name="localName"/> in a unit-scaled GPT-2: the reciprocal of the fixed
    /// factor its forward multiplies it by. Adam's step does not depend on a gradient's scale, so the backward factors
    /// need no correction; but a weight that the forward multiplies by α acts as the standard weight α·W, so the same
    /// --lr moves it alike only with the step η/α. Matmul weights: √fan_in (<c>c_attn</c>, <c>attn.c_proj</c>,
    /// <c>c_fc</c>: √C; <c>mlp.c_proj</c>: √(4C)); <c>wte</c>, which is the head's weight: √C; <c>wpe</c>: √2 (the
    /// embedding sum's 1/√2); biases and LayerNorm parameters, which no fixed factor multiplies: 1.
    /// </summary>
    public static float LearningRateScale(GptConfig config, string localName)
    {
        ArgumentNullException.ThrowIfNull(config);
        ArgumentNullException.ThrowIfNull(localName);
        if (!config.UnitScaling) return 1f;
        double c = config.Channels;
        return localName switch
        {
            "attn.c_attn.weight" or "attn.c_proj.weight" or "mlp.c_fc.weight" or "wte.weight" => (float)Math.Sqrt(c),
            "mlp.c_proj.weight" => (float)Math.Sqrt(4 * c),
            "wpe.weight" => (float)Math.Sqrt(2),
            _ => 1f,
        };
    }
}
