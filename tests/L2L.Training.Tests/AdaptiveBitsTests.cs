// The adaptive stash codec's choice of bits: the exact minimum of the variance estimate under the budget (checked
// against every choice), the pool bound, the update from measured estimates, and the checkpointed state.
using L2L.Training.Stash;
using Xunit;

namespace L2L.Training.Tests;

public sealed class AdaptiveBitsTests
{
    /// <summary>Every choice of 2, 4 or 8 bits for each of <paramref name="levels"/> levels.</summary>
    private static IEnumerable<int[]> AllChoices(int levels)
    {
        var count = (int)Math.Pow(3, levels);
        for (var i = 0; i < count; i++)
        {
            var bits = new int[levels];
            for (int l = 0, r = i; l < levels; l++, r /= 3) bits[l] = 2 << (r % 3);
            yield return bits;
        }
    }

    private static double Variance(double[] c, int[] bits) => c.Zip(bits, (x, b) => x / Math.Pow((1 << b) - 1, 2)).Sum();

    [Fact]
    public void TheChoiceIsTheLeastEstimateWithinTheBudget()
    {
        var random = new Random(5);
        for (var trial = 0; trial < 300; trial++)
        {
            var levels = 1 + trial % 6;
            // Coefficients over many orders of magnitude, some zero, as real layers give.
            var c = Enumerable.Range(0, levels).Select(_ => random.Next(5) == 0 ? 0 : Math.Pow(10, random.NextDouble() * 8 - 4)).ToArray();
            var budget = (float)(2 + random.NextDouble() * 6);
            var total = AdaptiveBits.BudgetBits(levels, budget);
            var chosen = AdaptiveBits.Choose(c, total);
            Assert.True(chosen.Sum() <= total, $"bits {string.Join(",", chosen)} over the budget {total}");
            Assert.All(chosen, b => Assert.Contains(b, AdaptiveBits.Widths));
            var best = AllChoices(levels).Where(b => b.Sum() <= total).Min(b => Variance(c, b));
            var got = Variance(c, chosen);
            Assert.True(got <= best * (1 + 1e-12), $"trial {trial}: {got} vs the least {best} ({string.Join(",", chosen)})");
            Assert.Equal(got, AdaptiveBits.Estimate(c, chosen), 1e-12 * Math.Max(got, 1e-300));
        }
    }

    [Fact]
    public void ALevelWithAHugeGradientGetsMoreBits()
    {
        // Four levels, 16 bits: equal levels share them evenly; a level a million times more sensitive takes 8.
        Assert.Equal([4, 4, 4, 4], AdaptiveBits.Choose([1, 1, 1, 1], 16));
        var bits = AdaptiveBits.Choose([1, 1, 1e6, 1], 16);
        Assert.Equal(8, bits[2]);
        Assert.All(bits.Where((_, l) => l != 2), b => Assert.True(b < 8));
        Assert.Equal(16, bits.Sum());
        // A level whose stash the backward never reads (coefficient 0) gets 2, and its bits go to the others.
        Assert.Equal([8, 2, 8, 2], AdaptiveBits.Choose([5, 0, 5, 0], 20));
        // Ties spend the budget: nothing is left unused when some level could take more.
        Assert.Equal(10, AdaptiveBits.Choose([0, 0], 10).Sum());
    }

    [Fact]
    public void BudgetAndWidestLevel()
    {
        Assert.Equal(16, AdaptiveBits.BudgetBits(4, 4f));
        Assert.Equal(13, AdaptiveBits.BudgetBits(3, 4.5f));
        Assert.Equal(22, AdaptiveBits.BudgetBits(10, 2.2f));
        Assert.Equal(8, AdaptiveBits.MaxLevelBits(4, 4f));  // 8 + 2 + 2 + 2 <= 16
        Assert.Equal(4, AdaptiveBits.MaxLevelBits(1, 4f));
        Assert.Equal(2, AdaptiveBits.MaxLevelBits(3, 2f));
        Assert.Equal(4, AdaptiveBits.MaxLevelBits(2, 3.5f)); // 7 bits: 4 + 2
        Assert.Throws<ArgumentOutOfRangeException>(() => AdaptiveBits.Choose([1, 1], 3));
    }

    [Fact]
    public void ThePoolBoundIsTheLargestPayloadOfAnyChoice()
    {
        foreach (var n in new long[] { 1, 3, 7, 22, 127, 336, 1000 })
        foreach (var levels in new[] { 1, 2, 3, 5 })
        foreach (var budget in new[] { 2f, 3f, 4f, 5.5f, 8f })
        {
            long Payload(int b) => (n * b + 31) / 32;
            var total = AdaptiveBits.BudgetBits(levels, budget);
            var expected = AllChoices(levels).Where(b => b.Sum() <= total).Max(b => b.Sum(Payload));
            Assert.Equal(expected, AdaptiveBits.MaxPayload(levels, budget, Payload));
        }
    }

    [Fact]
    public void UpdateWeighsEachMicroBatchsRangesByItsGradient()
    {
        var state = new AdaptiveBits(3, 4f);
        Assert.Equal([4, 4, 4], state.Current); // before any estimate every level weighs the same
        // Levels x micro-batches (U = 2): energies and gradient squares; level 2 did not run (layer drop).
        float[] energies = [1, 3, 100, 100, 0, 0];
        float[] grads = [2, 4, 1000, 0, 0, 0];
        state.Update(energies, grads, microBatches: 2, measured: 2);
        Assert.Equal((1 * 2 + 3 * 4) / 4.0, state.Coefficients[0]);
        Assert.Equal(100 * 1000 / 4.0, state.Coefficients[1]);
        Assert.True(double.IsNaN(state.Coefficients[2]));
        // The unmeasured level counts as the largest measured one.
        Assert.Equal(AdaptiveBits.Choose([3.5, 25000, 25000], 12), state.Current);
        // An overflowed estimate is the largest finite one, not infinity.
        state.Update([float.PositiveInfinity, 1, 1, 1, 1, 1], [1, 1, 1, 1, 1, 1], 2, 3);
        Assert.True(double.IsFinite(state.Coefficients[0]));
        Assert.Equal(8, state.Current[0]);
    }

    [Fact]
    public void TheStateSurvivesACheckpointAndABudgetChange()
    {
        var state = new AdaptiveBits(3, 4f);
        state.Update([1, 2, 3], [10, 0.5f, 1e-3f], 1, 3);
        var metadata = new Dictionary<string, string>();
        state.Save(metadata);
        var restored = new AdaptiveBits(3, 4f);
        Assert.True(restored.Load(metadata));
        Assert.Equal(state.Current, restored.Current);
        Assert.Equal(state.Coefficients, restored.Coefficients);
        // Saved bits beyond a smaller budget are chosen again from the saved coefficients.
        var smaller = new AdaptiveBits(3, 2f);
        Assert.True(smaller.Load(metadata));
        Assert.Equal([2, 2, 2], smaller.Current);
        // State of another depth is ignored.
        Assert.False(new AdaptiveBits(4, 4f).Load(metadata));
        Assert.False(new AdaptiveBits(3, 4f).Load(new Dictionary<string, string>()));
    }
}
