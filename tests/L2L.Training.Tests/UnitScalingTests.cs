// The unit-scaled GPT-2: unit variance at initialisation, the layers against the double reference, relay == conventional,
// and the FP16 underflow that motivates it.
using ILGPU.Runtime;
using L2L.Backends;
using L2L.Model;
using L2L.Model.Device;
using L2L.TestSupport;
using L2L.TestSupport.Reference;
using L2L.Training.Optim;
using Xunit;

namespace L2L.Training.Tests;

public sealed class UnitScalingTests(BackendFixture fixture)
{
    /// <summary>
    /// One forward and backward of the engine's layers over the first micro-batch of <paramref name="ids"/> and
    /// <paramref name="targets"/> (which hold <paramref name="microBatches"/> of them, one minibatch): the micro-batch's
    /// mean loss and every layer's gradient contribution, normalised as the executors do by the minibatch's labelled targets.
    /// </summary>
    private static (double Loss, float[][] Grads) EngineForwardBackward(Backend backend, GptConfig config, float[][] weights, int[] ids, int[] targets, int b, int t,
        int microBatches = 1)
    {
        var layout = new ModelLayout(config);
        var layers = Models.CreateLayers<float>(backend, layout);
        var mb = new MicroBatch(config, b, t);
        var s = backend.ComputeStream;
        using var owned = new ResourceList();
        using var inputs = new MicroBatchInputs(backend, mb, microBatches, layers.Inputs);
        var labelled = inputs.Load(ids, targets);
        var labelledHere = targets.Take(mb.Tokens).Count(x => x != MicroBatchInputs.IgnoreIndex);
        inputs.UploadInputs(s, 0);
        inputs.UploadTargets(s, 0);
        inputs.UploadPlans(s, 0);
        var p = layout.Layers.Select(l => owned.Add(backend.Upload(weights[l.Index], $"p.{l.Name}"))).ToArray();
        var g = layout.Layers.Select(l => owned.Add(backend.Zeros<float>(l.Length, $"g.{l.Name}"))).ToArray();
        var x = Enumerable.Range(0, config.Layers + 1).Select(i => owned.Add(backend.Zeros<float>(mb.ActivationLength, $"x.{i}"))).ToArray();
        var acts = layout.Blocks.Select(l => owned.Add(layers.CreateActivations(backend, mb, MemoryCategory.Other, l.Name))).ToArray();
        var dStream = owned.Add(backend.Zeros<float>(mb.ActivationLength, "dstream"));
        var scratch = owned.Add(layers.CreateScratch(backend, mb));
        int emb = layout.Embedding.Index, head = layout.Head.Index;
        scratch.LossTotal.View.MemSetToZero(s);
        layers.EmbeddingForward(s, mb, p[emb].View, inputs, x[0].View, scratch);
        for (var i = 0; i < config.Layers; i++)
            layers.BlockForward(s, mb, layout.Blocks[i], p[i + 1].View, x[i].View, x[i + 1].View, acts[i], inputs);
        layers.HeadForwardBackward(s, mb, p[head].View, g[head].View, p[emb].View, g[emb].View, x[^1].View, inputs, dStream.View, scratch, 1f / labelled);
        for (var i = config.Layers - 1; i >= 0; i--)
            layers.BlockBackward(s, mb, layout.Blocks[i], p[i + 1].View, g[i + 1].View, x[i].View, dStream.View, acts[i], scratch, inputs);
        layers.EmbeddingBackward(s, mb, p[emb].View, g[emb].View, inputs, dStream.View, scratch);
        var loss = backend.Download(scratch.LossTotal)[0] / labelledHere;
        return (loss, g.Select(backend.Download).ToArray());
    }

    private static Dictionary<string, double[]> ByName(ModelLayout layout, float[][] layers) =>
        layout.Layers.SelectMany(l => l.Tensors.Select(t => (t.FullName, Values: TestData.ToDouble(LayerLayout.Slice(layers[l.Index], t)))))
            .ToDictionary(x => x.FullName, x => x.Values, StringComparer.Ordinal);

    /// <summary>Initial weights with biases and LayerNorm parameters moved off 0 and 1, so their paths carry signal.</summary>
    private static float[][] Weights(ModelLayout layout, int seed)
    {
        var w = Models.Initialize(layout, seed);
        var k = 0;
        foreach (var layer in layout.Layers)
        foreach (var slot in layer.Tensors.Where(t => !t.Decay))
        {
            var noise = TestData.Normal(seed * 100 + k++, (int)slot.Length, 0.2);
            var values = LayerLayout.Slice(w[layer.Index], slot);
            for (var i = 0; i < values.Length; i++) values[i] += noise[i];
        }
        return w;
    }

    private static (int[] Ids, int[] Targets) Tokens(int vocab, int n, int seed)
    {
        var rng = new Random(seed);
        var ids = Enumerable.Range(0, n).Select(_ => rng.Next(vocab)).ToArray();
        var targets = Enumerable.Range(0, n).Select(i => i % 5 == 3 ? -1 : rng.Next(vocab)).ToArray();
        return (ids, targets);
    }

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public void LayersMatchTheDoubleReferenceOnOddShapes(bool unitScaling)
    {
        // Odd sizes everywhere: V 11, C 12 in 3 heads of 4, T 7 of 9 positions, B 3, two blocks; every fifth target unlabelled.
        const int b = 3, t = 7;
        var config = new GptConfig(VocabSize: 11, MaxPositions: 9, Channels: 12, Layers: 2, Heads: 3) { UnitScaling = unitScaling };
        var layout = new ModelLayout(config);
        var weights = Weights(layout, seed: 3);
        var (ids, targets) = Tokens(config.VocabSize, b * t, seed: 4);
        var dims = new GptReference.Dims(config.VocabSize, config.Channels, config.Heads, config.Layers, config.MaxPositions, b, t);
        var scales = unitScaling ? GptReference.Scales.UnitScaled(dims) : GptReference.Scales.Standard(dims);

        var (loss, grads) = EngineForwardBackward(fixture.Get(DeviceKind.Cpu), config, weights, ids, targets, b, t);
        var (refLoss, refGrads) = GptReference.ForwardBackward(dims, scales, ByName(layout, weights), ids, targets);

        // FP32 kernels against double loops over sums of at most a few hundred unit-sized terms: 1e-5 relative
        // rounding per op, compounded over two blocks and the head, stays below 1e-4 of the values' scale.
        Assert.Equal(refLoss, loss, 1e-5 * Math.Abs(refLoss));
        foreach (var (name, expected) in refGrads)
        {
            Assert.True(layout.TryFind(name, out var layer, out var slot));
            var scale = Math.Max(1e-3, expected.Max(Math.Abs));
            TensorAssert.Close(expected, LayerLayout.Slice(grads[layer.Index], slot), 1e-4 * scale, 1e-3, name);
        }
    }

    [Fact]
    public void UnitScaledBackwardIsTheTrueGradientUpToOneFactorPerTensor()
    {
        // The scale rules change each tensor's gradient by a constant only: check it on the reference's block input
        // gradient against central differences of sum(output * dy) through two blocks.
        var config = new GptConfig(VocabSize: 11, MaxPositions: 9, Channels: 12, Layers: 2, Heads: 3) { UnitScaling = true };
        var layout = new ModelLayout(config);
        var p = ByName(layout, Weights(layout, seed: 8));
        var dims = new GptReference.Dims(11, 12, 3, 2, 9, 2, 5);
        var s = GptReference.Scales.UnitScaled(dims);
        var x = TestData.ToDouble(TestData.Normal(1, dims.Rows * dims.Channels));
        var dy = TestData.ToDouble(TestData.Normal(2, dims.Rows * dims.Channels));
        double Objective(double[] input)
        {
            var h = input;
            for (var l = 0; l < 2; l++) h = GptReference.BlockForward(dims, s, p, l, h).Outputs["residual_2"];
            return FiniteDifference.Dot(h, dy);
        }
        var traces = new GptReference.BlockTrace[2];
        var h0 = x;
        for (var l = 0; l < 2; l++) { traces[l] = GptReference.BlockForward(dims, s, p, l, h0); h0 = traces[l].Outputs["residual_2"]; }
        var d = dy;
        for (var l = 1; l >= 0; l--) d = GptReference.BlockBackward(dims, s, p, traces[l], d).DInput;
        var fd = FiniteDifference.Gradient(Objective, x, 1e-5);
        // One common factor: the least-squares ratio, then every element within 1e-5 of the scale.
        var ratio = d.Zip(fd).Sum(z => z.First * z.Second) / fd.Sum(v => v * v);
        Assert.InRange(ratio, 0.05, 20);
        var expected = fd.Select(v => v * ratio).ToArray();
        TensorAssert.Close(expected, d, 1e-5 * expected.Max(Math.Abs), 1e-4, "block input gradient / common factor");
    }

    /// <summary>Standard deviation of every op's output and of the gradient at every op's input over a 4-block stack.</summary>
    private static List<(string What, double Std)> BlockStatistics(bool unitScaling)
    {
        // Unit-variance input and cotangent; a gpt2-tiny-shaped block (C 64, 4 heads) on 4 x 32 tokens.
        var config = new GptConfig(VocabSize: 256, MaxPositions: 64, Channels: 64, Layers: 4, Heads: 4) { UnitScaling = unitScaling };
        var layout = new ModelLayout(config);
        var p = ByName(layout, Models.Initialize(layout, seed: 21));
        var dims = new GptReference.Dims(256, 64, 4, 4, 64, 4, 32);
        var s = unitScaling ? GptReference.Scales.UnitScaled(dims) : GptReference.Scales.Standard(dims);
        var stats = new List<(string, double)>();
        var x = TestData.ToDouble(TestData.Normal(31, dims.Rows * dims.Channels));
        var traces = new GptReference.BlockTrace[4];
        for (var l = 0; l < 4; l++)
        {
            traces[l] = GptReference.BlockForward(dims, s, p, l, x);
            foreach (var (op, value) in traces[l].Outputs) stats.Add(($"h.{l}.{op} output", Std(value)));
            x = traces[l].Outputs["residual_2"];
        }
        var d = TestData.ToDouble(TestData.Normal(32, dims.Rows * dims.Channels));
        for (var l = 3; l >= 0; l--)
        {
            var grads = GptReference.BlockBackward(dims, s, p, traces[l], d);
            foreach (var (op, value) in grads.InputGrads) stats.Add(($"h.{l}.{op} input gradient", Std(value)));
            stats.Add(($"h.{l} block input gradient", Std(grads.DInput)));
            d = grads.DInput;
        }
        return stats;
    }

    private static double Std(double[] v)
    {
        var mean = v.Average();
        return Math.Sqrt(v.Sum(x => (x - mean) * (x - mean)) / v.Length);
    }

    [Fact]
    public void EveryOpOfAUnitScaledBlockHasUnitScaleAtInitialisation()
    {
        var unit = BlockStatistics(unitScaling: true);
        Assert.Equal(4 * (10 + 11), unit.Count);
        var off = unit.Where(x => x.Std is < 0.75 or > 1.25).ToList();
        Assert.True(off.Count == 0, "outside 1 ± 0.25: " + string.Join("; ", off.Select(x => $"{x.What} {x.Std:F3}")));

        // The standard GPT-2 of the same shapes is far from unit scale (its matmuls run at 0.02 · sqrt(fan_in)).
        var standard = BlockStatistics(unitScaling: false);
        var standardOff = standard.Count(x => x.Std is < 0.75 or > 1.25);
        Assert.True(standardOff >= standard.Count / 2, $"only {standardOff} of {standard.Count} standard statistics outside 1 ± 0.25");
        Assert.InRange(standard.Single(x => x.What == "h.0.attn.c_attn output").Std, 0.05, 0.3);
    }

    [Theory]
    [InlineData(OptimizerKind.AdamW)]
    [InlineData(OptimizerKind.Sgd)]
    public void RelayMatchesConventionalWithUnitScaling(OptimizerKind optimizer)
    {
        // Same tolerance argument as RelayEquivalenceTests: identical kernels in identical order, optimizer rounding only;
        // the weights are now of order 1 (N(0, 1) initialisation), which the relative part covers.
        const double atol = 1e-5, rtol = 1e-4;
        var backend = fixture.Get(DeviceKind.Cpu);
        var config = TrainingHarness.Tiny() with { UnitScaling = true };
        var conventional = TrainingHarness.Run(backend, TrainingHarness.Options(config, ExecutorKind.Conventional, optimizer: optimizer));
        // The key bias's gradient is exactly 0 in exact arithmetic (softmax ignores a constant added to every key's score), so
        // it is rounding noise, and noise of unit-scaled size (above AdamW's eps) becomes full steps of either sign. The
        // executors' last-bit differences after step 1 change that noise, so those elements are compared only for staying small.
        var layout = new ModelLayout(config);
        var keyBias = new bool[layout.TotalLength];
        long at = 0;
        foreach (var layer in layout.Layers)
        {
            if (layer.Kind == LayerKind.Block)
            {
                var slot = layer["attn.c_attn.bias"];
                for (var i = 0; i < config.Channels; i++) keyBias[at + slot.Offset + config.Channels + i] = true;
            }
            at += layer.Length;
        }
        double[] Kept(float[] w) => w.Where((_, i) => !keyBias[i]).Select(v => (double)v).ToArray();
        var relayDevice = TrainingHarness.Run(backend, TrainingHarness.Options(config, ExecutorKind.Relay, StashPlacement.Device, optimizer));
        var relayHost = TrainingHarness.Run(backend, TrainingHarness.Options(config, ExecutorKind.Relay, StashPlacement.Host, optimizer));
        Assert.All(conventional.Losses, l => Assert.InRange(l, 0.5, 10));
        TensorAssert.Close(conventional.Losses, relayDevice.Losses, atol, rtol, "relay (device stash) losses");
        TensorAssert.Close(conventional.Losses, relayHost.Losses, atol, rtol, "relay (host stash) losses");
        var reference = Kept(TrainingHarness.Flatten(conventional.Weights));
        TensorAssert.Close(reference, Kept(TrainingHarness.Flatten(relayDevice.Weights)), atol, rtol, "relay (device stash) weights");
        TensorAssert.Close(reference, Kept(TrainingHarness.Flatten(relayHost.Weights)), atol, rtol, "relay (host stash) weights");
        TensorAssert.Equal(TrainingHarness.Flatten(relayDevice.Weights), TrainingHarness.Flatten(relayHost.Weights), "device vs host stash");
        // Three AdamW steps move any element by at most about 3 lr (the key bias has learning-rate factor 1).
        var keyBiasValues = TrainingHarness.Flatten(conventional.Weights).Where((_, i) => keyBias[i]).ToArray();
        Assert.All(keyBiasValues, v => Assert.InRange(Math.Abs(v), 0, 4 * 3e-3));
        // The weights moved: the runs trained something.
        var init = TrainingHarness.Flatten(Models.Initialize(new ModelLayout(config), 11));
        Assert.True(init.Zip(TrainingHarness.Flatten(conventional.Weights)).Count(z => z.First != z.Second) > init.Length / 2);
    }

    [Fact]
    public void UnitScaledModelTrains()
    {
        var backend = fixture.Get(DeviceKind.Cpu);
        var options = TrainingHarness.Options(TrainingHarness.Tiny() with { UnitScaling = true }, ExecutorKind.Relay, StashPlacement.Host, batch: 8, steps: 100) with
        {
            Optimizer = new OptimizerSettings(OptimizerKind.AdamW, 1e-2f),
        };
        var run = TrainingHarness.Run(backend, options);
        // As the standard model's TrainingLowersTheLoss: from about ln(32) = 3.47 towards the corpus's entropy rate of 1.82 nats.
        Assert.True(run.Losses[^5..].Average() < run.Losses[..5].Average() - 0.5,
            $"loss went from {run.Losses[0]:F3} to {run.Losses[^1]:F3}");
    }

    /// <summary>Fraction of the nonzero FP32 gradients that become zero when cast to FP16.</summary>
    private static double Fp16UnderflowFraction(IEnumerable<float> grads)
    {
        var values = grads.Where(v => v != 0f).ToArray();
        var half = new Half[values.Length];
        HalfConvert.ToHalf(values, half);
        return (double)half.Count(h => h == Half.Zero || h == Half.NegativeZero) / values.Length;
    }

    [Fact]
    public void StandardGradientsUnderflowInFp16AndUnitScaledOnesDoNot()
    {
        // Evidence for FP16 training without loss scaling. What one micro-batch of 16 x 32 tokens contributes to the
        // gradient of a 128-micro-batch minibatch (65,536 tokens; GPT-2 trained on 0.5M-token batches): the mean loss
        // divides it by the minibatch's token count, and the 0.02-scale weights shrink it further, so a large part of the
        // standard model's parameter gradients sit below half of FP16's smallest subnormal (2^-25 ≈ 3e-8) and round to
        // zero. The unit-scaled model's loss gradient is per token (V/sqrt(V-1)), independent of the minibatch, and its
        // scales keep the same tensors near 1. Worst hit is the q,k,v projection (a quarter of each block's weights): with
        // near-uniform attention at initialisation its gradient is the smallest, and in FP16 nearly all of it is lost.
        const int b = 16, t = 32, microBatches = 2048;
        var backend = fixture.Get(DeviceKind.Cpu);
        var standard = new GptConfig(VocabSize: 64, MaxPositions: t, Channels: 64, Layers: 4, Heads: 4);
        var unit = standard with { UnitScaling = true };
        var (ids, targets) = Tokens(standard.VocabSize, microBatches * b * t, seed: 9);
        var (_, standardGrads) = EngineForwardBackward(backend, standard, Models.Initialize(new ModelLayout(standard), 5), ids, targets, b, t, microBatches);
        var (_, unitGrads) = EngineForwardBackward(backend, unit, Models.Initialize(new ModelLayout(unit), 5), ids, targets, b, t, microBatches);
        var layout = new ModelLayout(standard);
        IEnumerable<float> Qkv(float[][] grads) => layout.Blocks.SelectMany(l => LayerLayout.Slice(grads[l.Index], l["attn.c_attn.weight"]).ToArray());
        var standardLost = Fp16UnderflowFraction(standardGrads.SelectMany(g => g));
        var standardQkvLost = Fp16UnderflowFraction(Qkv(standardGrads));
        var unitLost = Fp16UnderflowFraction(unitGrads.SelectMany(g => g));
        var unitQkvLost = Fp16UnderflowFraction(Qkv(unitGrads));
        var report = $"FP16 underflow of nonzero gradients: standard {standardLost:P1} (q,k,v projection {standardQkvLost:P1}), unit-scaled {unitLost:P3} ({unitQkvLost:P3})";
        Assert.True(standardLost > 0.15 && standardQkvLost > 0.6, report);
        Assert.True(unitLost < 1e-3 && unitQkvLost == 0, report);
        TestContext.Current.SendDiagnosticMessage(report);
    }
}
