// The adaptive stash codec's choice of bits per stash level: an estimate of the gradient variance each level's
// stochastic rounding adds, and the exact minimum of its sum under an average-bits budget.
using System.Globalization;

namespace L2L.Training.Stash;

/// <summary>
/// Chooses 2, 4 or 8 bits for every stash level l (the input of the l-th block that runs) to minimise
/// <c>V = Σ_l c_l / (2^b_l − 1)²</c> subject to <c>Σ_l b_l ≤ floor(L·budget)</c>, and keeps the per-level
/// coefficients c_l between re-estimates.
/// </summary>
/// <remarks>
/// <para>The estimate. Stochastic rounding of a value in a group of range r at b bits adds a zero-mean error of
/// variance at most <c>step²/4</c>, <c>step = r/(2^b − 1)</c>, so the stashed input x̂_l of level l carries
/// <c>E‖x̂_l − x_l‖² ≤ Σ_g n_g·r_g²/(4·(2^b − 1)²)</c> (n_g values in group g). The backward recomputes block l from
/// x̂_l and multiplies what it recomputes by the gradient arriving at the block's output, dY_l: for a linear map
/// y = Wx the weight gradient is Σ_t dY_t·x_tᵀ, so its error has second moment Σ_t ‖dY_t‖²·E‖δx_t‖², and the
/// input gradient the block passes down scales with dY the same way. With the gradient's size per micro-batch
/// standing for its size per token, level l's added variance is <c>c_l / (2^b − 1)²</c> with
/// <c>c_l = Σ_u ‖dY_{l,u}‖² · Σ_g n_g·r_{g,l,u}² / 4</c> over micro-batches u. The ranges come from the encoded
/// tensors' own min/max words and ‖dY‖² from the boundary gradient already on the device, both reduced there.
/// It is a first-order proxy: it leaves out how the error, once in dX, travels to the layers below.</para>
/// <para>The choice is exact: a dynamic program over levels and bits used (in units of 2 bits), O(L²). Among
/// equal estimates it spends more of the budget. The result depends only on the coefficients, so the same seed
/// gives the same choices.</para>
/// </remarks>
public sealed class AdaptiveBits
{
    /// <summary>The widths a level may take, narrowest first.</summary>
    public static readonly IReadOnlyList<int> Widths = [2, 4, 8];

    /// <summary>Metadata keys of the state a checkpoint keeps: the bits of the next step and the coefficients.</summary>
    public const string BitsKey = "stash_adaptive_bits", CoefficientsKey = "stash_adaptive_coefficients";

    // Coefficients larger than this (an overflowed range or gradient) count as this, so sums stay finite.
    private const double Largest = 1e300;

    private readonly double[] _coefficients;
    private readonly int _budgetBits;

    /// <summary>The state of a run with <paramref name="levels"/> stash levels and a budget of <paramref name="budget"/> bits per level on average; every level is unmeasured.</summary>
    public AdaptiveBits(int levels, float budget)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(levels, 0);
        _budgetBits = BudgetBits(levels, budget);
        _coefficients = Enumerable.Repeat(double.NaN, levels).ToArray();
        Current = Choose(Known(), _budgetBits);
    }

    /// <summary>The bits of each level for the coming steps (until the next <see cref="Update"/>).</summary>
    public int[] Current { get; private set; }

    /// <summary>The coefficients c_l (NaN for a level never measured).</summary>
    public IReadOnlyList<double> Coefficients => _coefficients;

    /// <summary>The total bits the levels may use: <c>floor(L · budget)</c>.</summary>
    public static int BudgetBits(int levels, float budget) => (int)Math.Floor(levels * (double)budget + 1e-6);

    /// <summary>The widest bits any one level can get under the budget (the others at 2 bits).</summary>
    public static int MaxLevelBits(int levels, float budget)
    {
        var spare = BudgetBits(levels, budget) - 2 * (levels - 1);
        return Widths.Where(b => b <= spare).DefaultIfEmpty(2).Max();
    }

    /// <summary>The estimate <c>Σ_l c_l / (2^b_l − 1)²</c> of the variance a choice adds.</summary>
    public static double Estimate(ReadOnlySpan<double> coefficients, ReadOnlySpan<int> bits)
    {
        double sum = 0;
        for (var l = 0; l < coefficients.Length; l++)
            sum += Cost(coefficients[l], bits[l]);
        return sum;
    }

    private static double Cost(double coefficient, int bits)
    {
        double levels = (1 << bits) - 1;
        return coefficient / (levels * levels);
    }

    /// <summary>
    /// The bits (2, 4 or 8 per level) minimising <see cref="Estimate"/> under <c>Σ b_l ≤ <paramref name="budgetBits"/></c>;
    /// among equal estimates the one using the most bits. <paramref name="coefficients"/> must be finite and non-negative.
    /// </summary>
    public static int[] Choose(ReadOnlySpan<double> coefficients, int budgetBits)
    {
        var levels = coefficients.Length;
        var units = Math.Min(budgetBits / 2, 4 * levels);
        if (units < levels)
            throw new ArgumentOutOfRangeException(nameof(budgetBits), budgetBits, $"{levels} levels need at least {2 * levels} bits.");
        // best[c]: the least estimate of the levels so far using exactly c units of 2 bits; pick[l, c]: level l's width index there.
        var best = new double[units + 1];
        var next = new double[units + 1];
        var pick = new byte[levels, units + 1];
        Array.Fill(best, double.PositiveInfinity);
        best[0] = 0;
        for (var l = 0; l < levels; l++)
        {
            Array.Fill(next, double.PositiveInfinity);
            for (var c = 0; c <= units; c++)
            {
                if (double.IsPositiveInfinity(best[c])) continue;
                for (var w = 0; w < Widths.Count; w++)
                {
                    var to = c + Widths[w] / 2;
                    if (to > units) break;
                    var v = best[c] + Cost(coefficients[l], Widths[w]);
                    if (v < next[to])
                    {
                        next[to] = v;
                        pick[l, to] = (byte)w;
                    }
                }
            }
            (best, next) = (next, best);
        }
        var end = units;
        for (var c = units - 1; c >= 0; c--)
            if (best[c] < best[end]) end = c;
        var bits = new int[levels];
        for (var l = levels - 1; l >= 0; l--)
        {
            bits[l] = Widths[pick[l, end]];
            end -= bits[l] / 2;
        }
        return bits;
    }

    /// <summary>
    /// The largest <c>Σ_l payload(b_l)</c> over every choice within the budget, where <paramref name="payloadWords"/>
    /// gives one level's payload at b bits: what a pool sized from the budget must hold.
    /// </summary>
    public static long MaxPayload(int levels, float budget, Func<int, long> payloadWords)
    {
        var units = BudgetBits(levels, budget) / 2;
        long w2 = payloadWords(2), w4 = payloadWords(4), w8 = payloadWords(8);
        long most = 0;
        for (var n8 = 0; n8 <= levels; n8++)
        for (var n4 = 0; n4 <= levels - n8; n4++)
        {
            var n2 = levels - n8 - n4;
            if (n2 + 2 * n4 + 4 * n8 <= units)
                most = Math.Max(most, n2 * w2 + n4 * w4 + n8 * w8);
        }
        return most;
    }

    /// <summary>
    /// A new estimate from a measured step: <paramref name="energies"/>[l·U + u] = <c>Σ_g n_g·r_g²</c> of level l,
    /// micro-batch u; <paramref name="gradSquares"/>[l·U + u] = ‖dY_{l,u}‖². Levels from <paramref name="measured"/>
    /// on did not run (layer drop) and keep their previous coefficients; then the bits are chosen again.
    /// </summary>
    public void Update(ReadOnlySpan<float> energies, ReadOnlySpan<float> gradSquares, int microBatches, int measured)
    {
        for (var l = 0; l < Math.Min(measured, _coefficients.Length); l++)
        {
            double c = 0;
            for (var u = 0; u < microBatches; u++)
                c += (double)gradSquares[l * microBatches + u] * energies[l * microBatches + u];
            c /= 4;
            _coefficients[l] = double.IsFinite(c) ? Math.Min(c, Largest) : Largest;
        }
        Current = Choose(Known(), _budgetBits);
    }

    // The coefficients to choose by: a level never measured counts as the largest measured one (every level as 1 before any).
    private double[] Known()
    {
        var measured = _coefficients.Where(c => !double.IsNaN(c)).ToArray();
        var fill = measured.Length > 0 ? measured.Max() : 1.0;
        return _coefficients.Select(c => double.IsNaN(c) ? fill : c).ToArray();
    }

    /// <summary>Writes the bits of the next step and the coefficients into checkpoint metadata.</summary>
    public void Save(IDictionary<string, string> metadata)
    {
        metadata[BitsKey] = string.Join(",", Current.Select(b => b.ToString(CultureInfo.InvariantCulture)));
        metadata[CoefficientsKey] = string.Join(",", _coefficients.Select(c => c.ToString("R", CultureInfo.InvariantCulture)));
    }

    /// <summary>
    /// Restores the state <see cref="Save"/> wrote; state for another depth is ignored, and saved bits beyond this
    /// budget (a budget changed on resume) are chosen again from the coefficients. Returns whether state was restored.
    /// </summary>
    public bool Load(IReadOnlyDictionary<string, string> metadata)
    {
        if (!metadata.TryGetValue(CoefficientsKey, out var text)) return false;
        var coefficients = text.Length == 0 ? [] : text.Split(',').Select(t => double.Parse(t, CultureInfo.InvariantCulture)).ToArray();
        if (coefficients.Length != _coefficients.Length) return false;
        coefficients.CopyTo(_coefficients, 0);
        var bits = metadata.TryGetValue(BitsKey, out var b) && b.Length > 0
            ? b.Split(',').Select(t => int.Parse(t, CultureInfo.InvariantCulture)).ToArray() : [];
        Current = bits.Length == _coefficients.Length && bits.All(Widths.Contains) && bits.Sum() <= _budgetBits
            ? bits : Choose(Known(), _budgetBits);
        return true;
    }
}
