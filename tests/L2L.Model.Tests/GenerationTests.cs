// Generation: the key/value cache against recomputing the prefix, resident against streamed blocks, sampling and limits.
using L2L.Backends;
using L2L.Model.Gpt2;
using L2L.TestSupport;
using Xunit;

namespace L2L.Model.Tests;

public sealed class GenerationTests(BackendFixture fixture)
{
    private static readonly GptConfig Config = new(VocabSize: 37, MaxPositions: 24, Channels: 16, Layers: 3, Heads: 2);

    // Weights larger than GPT-2's initialisation, so logits are spread out and the arg-max is far from ties.
    internal static float[][] Weights(ModelLayout layout, int seed) =>
        layout.Layers.Select(l => TestData.Normal(seed + l.Index, checked((int)l.Length), 0.3)).ToArray();

    private static readonly int[] Prompt = [3, 14, 15, 9, 26];

    [Theory]
    [InlineData(WeightPlacement.Resident)]
    [InlineData(WeightPlacement.Streamed)]
    public void GreedyWithTheCacheEqualsRecomputingThePrefix(WeightPlacement placement)
    {
        var backend = fixture.Get(DeviceKind.Cpu);
        var layout = new ModelLayout(Config);
        using var decoder = new Gpt2Decoder(backend, layout, Weights(layout, 5), Config.MaxPositions, placement);
        Assert.Equal(placement == WeightPlacement.Streamed, decoder.Streamed);
        var greedy = new SamplingOptions(Temperature: 0);
        var newTokens = Config.MaxPositions - Prompt.Length;

        var cached = Generation.Run(decoder, Prompt, newTokens, greedy, useCache: true);
        Assert.Equal(Config.MaxPositions - 1, decoder.Position); // the last token is never fed back
        var recomputed = Generation.Run(decoder, Prompt, newTokens, greedy, useCache: false);
        Assert.Equal(recomputed.Ids, cached.Ids);
        Assert.True(cached.Ids.Distinct().Count() > 1, $"the sequence is not one repeated token: {string.Join(",", cached.Ids)}");

        // Logits agree position by position too.
        var sequence = Prompt.Concat(cached.Ids).ToArray();
        decoder.Prefill(Prompt);
        for (var t = Prompt.Length; t < sequence.Length; t++)
        {
            var step = decoder.Step(sequence[t]);
            var full = decoder.Prefill(sequence.AsSpan(0, t + 1));
            TensorAssert.Close(TestData.ToDouble(full), step, 1e-4, 1e-4, $"position {t}");
            decoder.Prefill(sequence.AsSpan(0, t + 1)); // leave the cache as the step left it
        }
    }

    [Fact]
    public void StreamedBlocksGiveTheResidentResultBitForBit()
    {
        var backend = fixture.Get(DeviceKind.Cpu);
        var layout = new ModelLayout(Config);
        var weights = Weights(layout, 8);
        using var resident = new Gpt2Decoder(backend, layout, weights, 12, WeightPlacement.Resident);
        using var streamed = new Gpt2Decoder(backend, layout, weights, 12, WeightPlacement.Streamed);
        var sampling = new SamplingOptions(Temperature: 0.8f, Seed: 3);
        var a = Generation.Run(resident, Prompt, 7, sampling);
        var b = Generation.Run(streamed, Prompt, 7, sampling);
        Assert.Equal(a.Ids, b.Ids);
        Assert.Equal(resident.Step(1), streamed.Step(1));
        Assert.Equal(0, resident.BusBytes);
        // Every forward (the prompt, 6 steps, 1 more) streams each block once.
        Assert.Equal(8L * Config.Layers * layout.Blocks[0].Length * 4, streamed.BusBytes);
    }

    [Fact]
    public void SamplingIsDeterministicPerSeed()
    {
        var backend = fixture.Get(DeviceKind.Cpu);
        var layout = new ModelLayout(Config);
        using var decoder = new Gpt2Decoder(backend, layout, Weights(layout, 2), Config.MaxPositions);
        IReadOnlyList<int> Sample(float temperature, int topK, float topP, int seed) =>
            Generation.Run(decoder, Prompt, 16, new SamplingOptions(temperature, topK, topP, seed)).Ids;

        Assert.Equal(Sample(1f, 0, 1f, 42), Sample(1f, 0, 1f, 42));
        Assert.Equal(Sample(0.7f, 5, 0.9f, 7), Sample(0.7f, 5, 0.9f, 7));
        Assert.NotEqual(Sample(1.5f, 0, 1f, 42), Sample(1.5f, 0, 1f, 43));
        var greedy = Sample(0f, 0, 1f, 1);
        Assert.Equal(greedy, Sample(1f, 1, 1f, 99));      // top-k 1 is greedy
        Assert.Equal(greedy, Sample(1f, 0, 1e-6f, 99));   // so is a tiny nucleus
    }

    [Fact]
    public void SamplerKeepsToTopKAndTopP()
    {
        float[] logits = [0f, 5f, 4.9f, -3f, 4.8f, 1f];
        var sampler = new TokenSampler(new SamplingOptions(Temperature: 1, TopK: 2, Seed: 5));
        var seen = Enumerable.Range(0, 400).Select(_ => sampler.Next(logits)).ToHashSet();
        Assert.Equal([1, 2], seen.Order());
        var nucleus = new TokenSampler(new SamplingOptions(Temperature: 1, TopP: 0.5f, Seed: 5));
        Assert.Equal([1, 2], Enumerable.Range(0, 400).Select(_ => nucleus.Next(logits)).ToHashSet().Order());
        Assert.Equal(1, TokenSampler.ArgMax(logits));
        Assert.Throws<InvalidDataException>(() => sampler.Next([0f, float.NaN]));
        Assert.Throws<ArgumentException>(() => new TokenSampler(new SamplingOptions(Temperature: -1)));
        Assert.Throws<ArgumentException>(() => new TokenSampler(new SamplingOptions(TopP: 0)));
        Assert.Throws<ArgumentException>(() => new TokenSampler(new SamplingOptions(TopK: -2)));
    }

    [Fact]
    public void MoreTokensThanNPositionsIsAClearError()
    {
        var e = Assert.Throws<ArgumentException>(() => Generation.CheckLength(20, 5, Config.MaxPositions));
        Assert.Contains("n_positions (24)", e.Message);
        Assert.Contains("at most 4 new tokens", e.Message);
        Generation.CheckLength(20, 4, Config.MaxPositions);

        var backend = fixture.Get(DeviceKind.Cpu);
        var layout = new ModelLayout(Config);
        Assert.Throws<ArgumentException>(() => new Gpt2Decoder(backend, layout, Weights(layout, 1), Config.MaxPositions + 1));
        using var decoder = new Gpt2Decoder(backend, layout, Weights(layout, 1), 6);
        Assert.Throws<ArgumentException>(() => Generation.Run(decoder, Prompt, 2, new SamplingOptions(0)));
        decoder.Prefill(Prompt);
        decoder.Step(1);
        Assert.Throws<InvalidOperationException>(() => decoder.Step(2));
        Assert.Throws<ArgumentOutOfRangeException>(() => decoder.Prefill([1, 37]));
    }

    [Fact]
    public void AutoPlacementStreamsWhenTheBlocksDoNotFitTheBudget()
    {
        var backend = fixture.Get(DeviceKind.Cpu);
        var layout = new ModelLayout(Config);
        var before = backend.Memory.BudgetBytes;
        try
        {
            var fixedBytes = Gpt2Decoder.FixedBytes(layout, 8) + backend.Memory.CurrentBytes;
            backend.Memory.BudgetBytes = (long)((fixedBytes + 2.5 * 4 * layout.Blocks[0].Length) / 0.9);
            using (var small = new Gpt2Decoder(backend, layout, Weights(layout, 1), 8))
                Assert.True(small.Streamed);
            backend.Memory.BudgetBytes = (long)((fixedBytes + 3.5 * 4 * layout.Blocks[0].Length) / 0.9);
            using var large = new Gpt2Decoder(backend, layout, Weights(layout, 1), 8);
            Assert.False(large.Streamed);
        }
        finally
        {
            backend.Memory.BudgetBytes = before;
        }
    }
}
