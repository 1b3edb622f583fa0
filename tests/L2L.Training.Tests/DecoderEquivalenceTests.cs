// The decoder's forward (prefill and cached steps) gives the loss the training forward gives on the same window.
using L2L.Backends;
using L2L.Model;
using L2L.Model.Data;
using L2L.Model.Gpt2;
using L2L.TestSupport;
using Xunit;

namespace L2L.Training.Tests;

public sealed class DecoderEquivalenceTests(BackendFixture fixture)
{
    private sealed class Window(int[] tokens, int vocab) : ITokenSource
    {
        public int VocabSize => vocab;
        public long Length => tokens.Length;
        public string Description => "window";
        public void Read(long start, Span<int> destination)
        {
            for (var i = 0; i < destination.Length; i++) destination[i] = tokens[(start + i) % tokens.Length];
        }
    }

    private static double CrossEntropy(float[] logits, int target)
    {
        var max = logits.Max();
        var sum = logits.Sum(l => Math.Exp(l - max));
        return Math.Log(sum) + max - logits[target];
    }

    [Theory]
    [InlineData(WeightPlacement.Resident)]
    [InlineData(WeightPlacement.Streamed)]
    public void CachedStepsReproduceTheEvaluatorsLoss(WeightPlacement placement)
    {
        var backend = fixture.Get(DeviceKind.Cpu);
        var config = TrainingHarness.Tiny(layers: 3);
        var layout = new ModelLayout(config);
        var weights = layout.Layers.Select(l => TestData.Normal(40 + l.Index, checked((int)l.Length), 0.2)).ToArray();
        const int t = 12;
        var random = new Random(3);
        var tokens = Enumerable.Range(0, t + 1).Select(_ => random.Next(config.VocabSize)).ToArray();

        using var evaluator = new Evaluator(backend, layout, weights, 1, t);
        var expected = evaluator.Evaluate(new Window(tokens, config.VocabSize), 1).Loss;

        using var decoder = new Gpt2Decoder(backend, layout, weights, t, placement);
        var total = CrossEntropy(decoder.Prefill(tokens.AsSpan(0, 1)), tokens[1]);
        for (var i = 1; i < t; i++)
            total += CrossEntropy(decoder.Step(tokens[i]), tokens[i + 1]);
        Assert.Equal(expected, total / t, 1e-5);

        // A prefix run at once (causal attention) ends on the same logits as the steps.
        var prefill = decoder.Prefill(tokens.AsSpan(0, t));
        Assert.Equal(CrossEntropy(prefill, tokens[t]), CrossEntropy(decoder.Prefill(tokens.AsSpan(0, t)), tokens[t]));
        decoder.Prefill(tokens.AsSpan(0, t - 1));
        TensorAssert.Close(TestData.ToDouble(prefill), decoder.Step(tokens[t - 1]), 1e-5, 1e-4, "prefill vs step");
    }
}
