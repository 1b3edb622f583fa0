// Dropout in training: hashed masks make relay (with recomputation) and conventional agree; runs repeat; eval has none.
using L2L.Backends;
using L2L.Model;
using L2L.TestSupport;
using L2L.Training.Optim;
using Xunit;

namespace L2L.Training.Tests;

public sealed class DropoutTrainingTests(BackendFixture fixture)
{
    private const double Atol = 1e-5, Rtol = 1e-4; // as RelayEquivalenceTests: only the optimizers round differently

    private static TrainOptions Options(ExecutorKind executor, StashPlacement stash = StashPlacement.Device, float? dropout = 0.2f, int microBatches = 2) =>
        TrainingHarness.Options(TrainingHarness.Tiny(), executor, stash, OptimizerKind.AdamW, microBatches: microBatches) with { Dropout = dropout };

    [Fact]
    public void RelayMatchesConventionalWithDropoutOn()
    {
        var backend = fixture.Get(DeviceKind.Cpu);
        var conventional = TrainingHarness.Run(backend, Options(ExecutorKind.Conventional));
        var device = TrainingHarness.Run(backend, Options(ExecutorKind.Relay));
        var host = TrainingHarness.Run(backend, Options(ExecutorKind.Relay, StashPlacement.Host));
        TensorAssert.Close(conventional.Losses, device.Losses, Atol, Rtol, "losses");
        var reference = TestData.ToDouble(TrainingHarness.Flatten(conventional.Weights));
        TensorAssert.Close(reference, TrainingHarness.Flatten(device.Weights), Atol, Rtol, "relay (device stash) weights");
        TensorAssert.Close(reference, TrainingHarness.Flatten(host.Weights), Atol, Rtol, "relay (host stash) weights");
        TensorAssert.Equal(TrainingHarness.Flatten(device.Weights), TrainingHarness.Flatten(host.Weights), "device vs host stash");

        // Dropout is really on: without it the losses differ from the first step.
        var off = TrainingHarness.Run(backend, Options(ExecutorKind.Relay, dropout: null));
        Assert.NotEqual(off.Losses[0], device.Losses[0]);
    }

    [Fact]
    public void TheSameSeedRepeatsTheRunAndAnotherSeedDoesNot()
    {
        var backend = fixture.Get(DeviceKind.Cpu);
        var first = TrainingHarness.Run(backend, Options(ExecutorKind.Relay));
        var second = TrainingHarness.Run(backend, Options(ExecutorKind.Relay));
        Assert.Equal(first.Losses, second.Losses);
        TensorAssert.Equal(TrainingHarness.Flatten(first.Weights), TrainingHarness.Flatten(second.Weights), "same seed");
        // Another seed also initialises differently; the point is that the runs are a function of the seed.
        var other = TrainingHarness.Run(backend, Options(ExecutorKind.Relay) with { Seed = 12 });
        Assert.NotEqual(first.Losses, other.Losses);
    }

    [Fact]
    public void MasksArePlacedByTheElementsPositionInTheMinibatch()
    {
        // Each micro-batch's elements are numbered from its place in the minibatch, so the same minibatch split in 1
        // or 4 micro-batches sees the same masks (different micro-batches different ones) and trains the same model.
        var backend = fixture.Get(DeviceKind.Cpu);
        var one = TrainingHarness.Run(backend, Options(ExecutorKind.Relay, microBatches: 1));
        var four = TrainingHarness.Run(backend, Options(ExecutorKind.Relay, microBatches: 4));
        TensorAssert.Close(one.Losses, four.Losses, Atol, Rtol, "losses");
        TensorAssert.Close(TestData.ToDouble(TrainingHarness.Flatten(one.Weights)), TrainingHarness.Flatten(four.Weights), Atol, Rtol, "weights");
    }

    [Fact]
    public void EvaluationIsDeterministicAndDropoutFree()
    {
        var backend = fixture.Get(DeviceKind.Cpu);
        var trained = TrainingHarness.Run(backend, Options(ExecutorKind.Relay));
        var withDropout = TrainingHarness.Tiny() with { Dropout = new(0.3f, 0f, 0.3f) };
        double Eval(GptConfig config)
        {
            using var evaluator = new Evaluator(backend, new ModelLayout(config), trained.Weights, 4, 8);
            return evaluator.Evaluate(TrainingHarness.Corpus(), 2).Loss;
        }
        var a = Eval(withDropout);
        Assert.Equal(a, Eval(withDropout));
        Assert.Equal(Eval(TrainingHarness.Tiny()), a);
    }

    [Fact]
    public void GradientsWithDropoutMatchFiniteDifferences()
    {
        // The masks depend on (seed, step, layer, site, element) only, so with them fixed the loss is a smooth function
        // of the weights; backward must apply each forward mask to its gradient (ignoring it would be off by 1/(1-p) and
        // in every dropped element).
        var backend = fixture.Get(DeviceKind.Cpu);
        var options = Options(ExecutorKind.Conventional, dropout: 0.3f);
        var layout = new ModelLayout(options.Config);
        var weights = Models.Initialize(layout, options.Seed);
        var batches = BatchSources.Create(options, TrainingHarness.Corpus());
        var inputs = new int[options.Batch * options.SeqLen];
        var targets = new int[inputs.Length];
        batches.Fill(0, inputs, targets);
        var mb = new Model.Device.MicroBatch(options.Config, options.MicroBatchSize, options.SeqLen);
        (double, float[][]) At(float[][] w)
        {
            using var e = new ConventionalExecutor(backend, layout, w, options.Optimizer, options.LearningRate, mb, options.MicroBatches,
                dropout: options.ResolvedDropout, seed: options.Seed);
            return e.LossAndGradients(inputs, targets, step: 5);
        }
        var (_, grads) = At(weights);
        const float h = 1e-2f;
        var checkedCount = 0;
        foreach (var layer in layout.Layers)
        {
            // The three largest gradients of each layer, where a missing mask would show most.
            foreach (var i in Enumerable.Range(0, (int)layer.Length).OrderByDescending(i => Math.Abs(grads[layer.Index][i])).Take(3))
            {
                var w = weights.Select(x => (float[])x.Clone()).ToArray();
                w[layer.Index][i] += h;
                var (plus, _) = At(w);
                w[layer.Index][i] -= 2 * h;
                var (minus, _) = At(w);
                var fd = (plus - minus) / (2 * h);
                var g = grads[layer.Index][i];
                Assert.True(Math.Abs(fd - g) <= 2e-3 + 0.03 * Math.Abs(g), $"{layer.Name}[{i}]: backward {g}, finite differences {fd}");
                checkedCount++;
            }
        }
        Assert.Equal(3 * layout.Layers.Count, checkedCount);
    }

    [Fact]
    public void ConfigKeysAndRefusals()
    {
        var json = """{"vocab_size": 32, "n_positions": 16, "n_embd": 16, "n_layer": 2, "n_head": 2, "embd_pdrop": 0.1, "attn_pdrop": 0.0, "resid_pdrop": 0.25}""";
        var config = GptConfig.FromJson(json);
        Assert.Equal(new Model.Device.DropoutRates(0.1f, 0f, 0.25f), config.Dropout);
        Assert.Equal(config, GptConfig.FromJson(config.ToJson()));
        Assert.Equal(Model.Device.DropoutRates.None, GptConfig.FromJson("""{"vocab_size": 32, "n_positions": 16, "n_embd": 16, "n_layer": 2, "n_head": 2}""").Dropout);
        Assert.Throws<InvalidDataException>(() => GptConfig.FromJson(json.Replace("0.25", "1.5")));

        var attention = Options(ExecutorKind.Relay, dropout: null) with { Config = config with { Dropout = new(0f, 0.1f, 0f) } };
        var e = Assert.Throws<ArgumentException>(attention.Validate);
        Assert.Contains("attn_pdrop", e.Message);
        (attention with { Dropout = 0.1f }).Validate(); // --dropout sets attn_pdrop to 0
        Assert.Throws<ArgumentException>((Options(ExecutorKind.Relay) with { Dropout = 1f }).Validate);
    }

    [Fact]
    public void BertHiddenDropoutRelayMatchesConventionalAndFiniteDifferences()
    {
        var backend = fixture.Get(DeviceKind.Cpu);
        var options = BertHarness.Options(BertHarness.Tiny(2), ExecutorKind.Relay) with { Dropout = 0.3f };
        var relay = BertHarness.Run(backend, options);
        var host = BertHarness.Run(backend, options with { Stash = StashPlacement.Host });
        var conventional = BertHarness.Run(backend, options with { Executor = ExecutorKind.Conventional });
        var plain = BertHarness.Run(backend, options with { Dropout = null });
        TensorAssert.Close(conventional.Losses, relay.Losses, Atol, Rtol, "losses");
        TensorAssert.Close(TestData.ToDouble(TrainingHarness.Flatten(conventional.Weights)), TrainingHarness.Flatten(relay.Weights), Atol, Rtol, "weights");
        TensorAssert.Equal(TrainingHarness.Flatten(relay.Weights), TrainingHarness.Flatten(host.Weights), "device vs host stash");
        Assert.NotEqual(plain.Losses[0], relay.Losses[0]);

        // Backward applies each forward mask (embedding, attention output, feed-forward output).
        var layout = new ModelLayout(options.Config);
        var weights = Models.Initialize(layout, options.Seed);
        var inputs = new int[options.Batch * options.SeqLen];
        var targets = new int[inputs.Length];
        new MaskedBatches((Model.Bert.BertConfig)options.Config, options.Batch, options.SeqLen).Fill(0, inputs, targets);
        var mb = new Model.Device.MicroBatch(options.Config, options.MicroBatchSize, options.SeqLen);
        (double, float[][]) At(float[][] w)
        {
            using var e = new ConventionalExecutor(backend, layout, w, options.Optimizer, options.LearningRate, mb, options.MicroBatches,
                dropout: options.ResolvedDropout, seed: options.Seed);
            return e.LossAndGradients(inputs, targets, step: 2);
        }
        var (_, grads) = At(weights);
        const float h = 1e-2f;
        foreach (var layer in layout.Layers)
        {
            foreach (var i in Enumerable.Range(0, (int)layer.Length).OrderByDescending(i => Math.Abs(grads[layer.Index][i])).Take(3))
            {
                var w = weights.Select(x => (float[])x.Clone()).ToArray();
                w[layer.Index][i] += h;
                var (plus, _) = At(w);
                w[layer.Index][i] -= 2 * h;
                var (minus, _) = At(w);
                var fd = (plus - minus) / (2 * h);
                var g = grads[layer.Index][i];
                Assert.True(Math.Abs(fd - g) <= 2e-3 + 0.03 * Math.Abs(g), $"{layer.Name}[{i}]: backward {g}, finite differences {fd}");
            }
        }
    }
}
