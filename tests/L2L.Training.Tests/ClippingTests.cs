// Global-norm clipping with deferred updates: every executor matches a PyTorch-order clip_grad_norm_ + optimizer reference.
using L2L.Backends;
using L2L.Model;
using L2L.Model.Device;
using L2L.TestSupport;
using L2L.Training.Optim;
using L2L.Training.Tests.Optim;
using L2L.Training.Update;
using Xunit;

namespace L2L.Training.Tests;

public sealed class ClippingTests(BackendFixture fixture)
{
    // As in RelayEquivalenceTests: gradients agree to the bit across executors; the optimizers (host vector code,
    // device kernel, scalar reference) and the norm's summation order round differently in the last bits.
    private const double Atol = 1e-5, Rtol = 1e-4;
    private const float Clip = 0.05f;

    public static TheoryData<OptimizerKind> Optimizers => new(OptimizerKind.Sgd, OptimizerKind.AdamW);

    private static TrainOptions Options(ExecutorKind executor, StashPlacement stash, OptimizerKind optimizer, float? clip = Clip, long steps = 4) =>
        TrainingHarness.Options(TrainingHarness.Tiny(), executor, stash, optimizer, steps: steps) with { ClipGradNorm = clip };

    /// <summary>
    /// PyTorch order, step by step: gradients of the mean loss at the current weights (from the conventional
    /// executor, updating nothing), then clip_grad_norm_ (norm over every parameter, coefficient max / (norm + 1e-6)
    /// in FP32, applied when below 1), then the optimizer per tensor. Returns the weights and each step's norm.
    /// </summary>
    private static (float[][] Weights, double[] Norms) Reference(Backend backend, TrainOptions options)
    {
        var layout = new ModelLayout(options.Config);
        var weights = Models.Initialize(layout, options.Seed);
        var m = layout.Layers.Select(l => new float[l.Length]).ToArray();
        var v = layout.Layers.Select(l => new float[l.Length]).ToArray();
        var batches = BatchSources.Create(options, TrainingHarness.Corpus(options.Config.VocabSize));
        var inputs = new int[options.Batch * options.SeqLen];
        var targets = new int[inputs.Length];
        var norms = new double[options.Steps];
        var mb = new MicroBatch(options.Config, options.MicroBatchSize, options.SeqLen);
        for (var step = 0; step < options.Steps; step++)
        {
            batches.Fill(step, inputs, targets);
            float[][] grads;
            using (var conventional = new ConventionalExecutor(backend, layout, weights, options.Optimizer, options.LearningRate, mb, options.MicroBatches))
                grads = conventional.LossAndGradients(inputs, targets).Gradients;
            var total = grads.SelectMany(g => g).Sum(x => (double)x * x);
            norms[step] = Math.Sqrt(total);
            foreach (var g in grads)
            {
                // Global: one coefficient from the model's norm; per layer: each layer's own.
                var norm = options.ClipMode == ClipMode.Global ? norms[step] : Math.Sqrt(g.Sum(x => (double)x * x));
                var coef = options.ClipGradNorm is { } max ? max / ((float)norm + 1e-6f) : 1f;
                if (coef < 1f)
                    for (var i = 0; i < g.Length; i++) g[i] *= coef;
            }
            var lr = options.LearningRate.At(step);
            foreach (var layer in layout.Layers)
            {
                foreach (var slot in layer.Tensors)
                {
                    var range = new Range((int)slot.Offset, (int)(slot.Offset + slot.Length));
                    var p = weights[layer.Index][range];
                    var g = grads[layer.Index][range];
                    var ms = m[layer.Index][range];
                    var vs = v[layer.Index][range];
                    ReferenceOptimizers.Step(options.Optimizer, p, g, ms, vs, step + 1, lr, slot.Decay);
                    p.CopyTo(weights[layer.Index], (int)slot.Offset);
                    ms.CopyTo(m[layer.Index], (int)slot.Offset);
                    vs.CopyTo(v[layer.Index], (int)slot.Offset);
                }
            }
        }
        return (weights, norms);
    }

    [Theory]
    [MemberData(nameof(Optimizers))]
    public void EveryExecutorMatchesTheClipGradNormReference(OptimizerKind optimizer)
    {
        var backend = fixture.Get(DeviceKind.Cpu);
        var relayDevice = Options(ExecutorKind.Relay, StashPlacement.Device, optimizer);
        Assert.Equal(UpdateMode.Deferred, relayDevice.ResolvedUpdateMode);
        var (expected, norms) = Reference(backend, relayDevice);
        // The clip bites at every step, so the coefficient is exercised.
        Assert.All(norms, n => Assert.True(n > 2 * Clip, $"norm {n} does not exceed the clip"));

        var device = TrainingHarness.Run(backend, relayDevice);
        var host = TrainingHarness.Run(backend, Options(ExecutorKind.Relay, StashPlacement.Host, optimizer));
        var conventional = TrainingHarness.Run(backend, Options(ExecutorKind.Conventional, StashPlacement.Device, optimizer));
        var reference = TestData.ToDouble(TrainingHarness.Flatten(expected));
        TensorAssert.Close(reference, TrainingHarness.Flatten(device.Weights), Atol, Rtol, "relay (device stash) vs reference");
        TensorAssert.Close(reference, TrainingHarness.Flatten(host.Weights), Atol, Rtol, "relay (host stash) vs reference");
        TensorAssert.Close(reference, TrainingHarness.Flatten(conventional.Weights), Atol, Rtol, "conventional vs reference");
        // The embedding and head updated by the param server instead (in the deferred chain, first and last).
        var hostEmbedding = TrainingHarness.Run(backend, relayDevice with { EmbeddingUpdate = UpdateLocation.Host });
        TensorAssert.Close(reference, TrainingHarness.Flatten(hostEmbedding.Weights), Atol, Rtol, "relay (host-updated embedding) vs reference");
        TensorAssert.Equal(TrainingHarness.Flatten(device.Weights), TrainingHarness.Flatten(host.Weights), "device vs host stash");
        TensorAssert.Close(conventional.Losses, device.Losses, Atol, Rtol, "losses");
        // grad_norm is the pre-clip norm the reference computes (FP32 per-layer sums added in double).
        foreach (var run in new[] { device, host, conventional })
            TensorAssert.Close(norms, run.Metrics.Select(x => x.GradNorm).ToArray(), 1e-7, 1e-5, "grad_norm");

        // Without the clip the trajectory is different: the clip changed the result.
        var unclipped = TrainingHarness.Run(backend, Options(ExecutorKind.Relay, StashPlacement.Device, optimizer, clip: null));
        Assert.NotEqual(TrainingHarness.Flatten(unclipped.Weights), TrainingHarness.Flatten(device.Weights));
    }

    [Theory]
    [InlineData(StashPlacement.Device, UpdateLocation.Device)]
    [InlineData(StashPlacement.Host, UpdateLocation.Device)]
    [InlineData(StashPlacement.Device, UpdateLocation.Host)]
    public void DeferredWithoutClippingIsEagerToTheBit(StashPlacement stash, UpdateLocation embedding)
    {
        // Deferring changes when each layer is updated, not with what: the same gradients, the same kernels or
        // host code per layer, so the same bits (updates of different layers are independent).
        var backend = fixture.Get(DeviceKind.Cpu);
        var options = Options(ExecutorKind.Relay, stash, OptimizerKind.AdamW, clip: null) with { EmbeddingUpdate = embedding };
        var eager = TrainingHarness.Run(backend, options with { UpdateMode = UpdateMode.Eager });
        var deferred = TrainingHarness.Run(backend, options with { UpdateMode = UpdateMode.Deferred });
        Assert.Equal(eager.Losses, deferred.Losses);
        TensorAssert.Equal(TrainingHarness.Flatten(eager.Weights), TrainingHarness.Flatten(deferred.Weights), "eager vs deferred");
        Assert.Equal(eager.Metrics.Select(m => m.GradNorm), deferred.Metrics.Select(m => m.GradNorm));
        Assert.All(eager.Metrics, m => Assert.True(m.GradNorm > 0 && double.IsFinite(m.GradNorm)));
    }

    [Fact]
    public void PerLayerClippingKeepsEagerUpdatesAndMatchesConventional()
    {
        var backend = fixture.Get(DeviceKind.Cpu);
        var options = Options(ExecutorKind.Relay, StashPlacement.Device, OptimizerKind.AdamW) with { ClipMode = ClipMode.Layer };
        Assert.Equal(UpdateMode.Eager, options.ResolvedUpdateMode);
        var eager = TrainingHarness.Run(backend, options);
        var deferred = TrainingHarness.Run(backend, options with { UpdateMode = UpdateMode.Deferred });
        var conventional = TrainingHarness.Run(backend, options with { Executor = ExecutorKind.Conventional });
        var global = TrainingHarness.Run(backend, options with { ClipMode = ClipMode.Global });
        var (expected, _) = Reference(backend, options);
        TensorAssert.Close(TestData.ToDouble(TrainingHarness.Flatten(expected)), TrainingHarness.Flatten(eager.Weights), Atol, Rtol, "relay vs per-layer reference");
        TensorAssert.Equal(TrainingHarness.Flatten(eager.Weights), TrainingHarness.Flatten(deferred.Weights), "eager vs deferred");
        TensorAssert.Close(TestData.ToDouble(TrainingHarness.Flatten(conventional.Weights)), TrainingHarness.Flatten(eager.Weights), Atol, Rtol, "relay vs conventional");
        Assert.NotEqual(TrainingHarness.Flatten(global.Weights), TrainingHarness.Flatten(eager.Weights));
    }

    [Fact]
    public void GlobalClippingRefusesEagerUpdates()
    {
        var options = Options(ExecutorKind.Relay, StashPlacement.Device, OptimizerKind.AdamW) with { UpdateMode = UpdateMode.Eager };
        var e = Assert.Throws<ArgumentException>(options.Validate);
        Assert.Contains("--update-mode deferred", e.Message);
        Assert.Throws<ArgumentException>((options with { UpdateMode = null, ClipGradNorm = -1f }).Validate);
    }
}
