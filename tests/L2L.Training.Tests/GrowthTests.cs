// Growing a checkpoint keeps the model's function, and the grown checkpoint trains and resumes.
using L2L.Backends;
using L2L.Model;
using L2L.TestSupport;
using L2L.Training.Optim;
using Xunit;

namespace L2L.Training.Tests;

public sealed class GrowthTests(BackendFixture fixture) : IDisposable
{
    private readonly string _dir = Path.Combine(Path.GetTempPath(), "l2l-grow-" + Guid.NewGuid().ToString("N"));

    public void Dispose()
    {
        if (Directory.Exists(_dir)) Directory.Delete(_dir, recursive: true);
    }

    private static double Eval(Backend backend, IModelConfig config, float[][] weights)
    {
        using var evaluator = new Evaluator(backend, new ModelLayout(config), weights, 4, 8);
        return evaluator.Evaluate(TrainingHarness.Corpus(), 3).Loss;
    }

    [Theory]
    [InlineData(GrowthPlacement.Top)]
    [InlineData(GrowthPlacement.Interleave)]
    public void TheGrownModelComputesTheSameFunctionTrainsAndResumes(GrowthPlacement at)
    {
        var backend = fixture.Get(DeviceKind.Cpu);
        var original = Path.Combine(_dir, "original");
        var grownDir = Path.Combine(_dir, "grown");
        var options = TrainingHarness.Options(TrainingHarness.Tiny(2), ExecutorKind.Relay, optimizer: OptimizerKind.AdamW, steps: 2);
        using (var trainer = new Trainer(backend, options, TrainingHarness.Corpus()))
        {
            trainer.Run(cancel: TestContext.Current.CancellationToken);
            trainer.Save(original);
        }
        var grown = CheckpointGrowth.Grow(original, 5, grownDir, at, seed: 3);
        Assert.Equal(5, grown.Layers);

        // New blocks add exactly zero to the residual stream: the same loss, bit for bit.
        var (oldConfig, oldWeights) = Checkpoint.Load(original);
        var (newConfig, newWeights) = Checkpoint.Load(grownDir);
        Assert.Equal(Eval(backend, oldConfig, oldWeights), Eval(backend, newConfig, newWeights));

        // Old layers keep their optimizer state and update counts; new blocks start fresh.
        var layout = new ModelLayout(newConfig);
        var oldLayout = new ModelLayout(oldConfig);
        var state = Checkpoint.LoadTrainingState(grownDir, layout);
        var oldState = Checkpoint.LoadTrainingState(original, oldLayout);
        var origin = ModelGrowth.Placement(2, 5, at);
        var counts = state.Metadata["layer_updates"].Split(',').Select(long.Parse).ToArray();
        for (var b = 0; b < 5; b++)
        {
            var i = layout.Blocks[b].Index;
            if (origin[b] >= 0)
            {
                Assert.Equal(oldState.LayerStates[oldLayout.Blocks[origin[b]].Index], state.LayerStates[i]);
                Assert.Equal(oldWeights[oldLayout.Blocks[origin[b]].Index], newWeights[i]);
                Assert.Equal(2, counts[i]);
            }
            else
            {
                Assert.All(state.LayerStates[i], v => Assert.Equal(0f, v));
                Assert.Equal(0, counts[i]);
            }
        }
        Assert.Equal(2, state.Step);
        Assert.Equal(at == GrowthPlacement.Top ? [0, 1, -1, -1, -1] : [0, -1, 1, -1, -1], origin);

        // It trains (the new blocks' zero projections get gradients and move) and resumes on the same trajectory.
        var grownOptions = options with { Config = (GptConfig)newConfig, Steps = 4 };
        var straight = TrainingHarness.Run(backend, grownOptions, newWeights, state);
        Assert.All(straight.Losses, l => Assert.True(double.IsFinite(l)));
        var newBlock = layout.Blocks[Array.IndexOf(origin, -1)];
        var proj = newBlock["mlp.c_proj.weight"];
        Assert.Contains(straight.Weights[newBlock.Index].AsSpan((int)proj.Offset, (int)proj.Length).ToArray(), v => v != 0f);
        var half = Path.Combine(_dir, "half");
        using (var trainer = new Trainer(backend, grownOptions, TrainingHarness.Corpus(), newWeights, state))
        {
            trainer.Step();
            trainer.Save(half);
        }
        var (_, halfWeights) = Checkpoint.Load(half);
        var resumed = TrainingHarness.Run(backend, grownOptions, halfWeights, Checkpoint.LoadTrainingState(half, layout));
        Assert.Equal(straight.Losses[1..], resumed.Losses);
        TensorAssert.Equal(TrainingHarness.Flatten(straight.Weights), TrainingHarness.Flatten(resumed.Weights), "weights");
    }

    [Fact]
    public void BadGrowthRequestsAreRefused()
    {
        var config = TrainingHarness.Tiny(2);
        var weights = Models.Initialize(new ModelLayout(config), 1);
        Assert.Contains("more than", Assert.Throws<ArgumentException>(() => ModelGrowth.Grow(config, weights, 2, GrowthPlacement.Top, 1)).Message);
        var bert = BertHarness.Tiny(2);
        Assert.Contains("pre-LN", Assert.Throws<ArgumentException>(() =>
            ModelGrowth.Grow(bert, Models.Initialize(new ModelLayout(bert), 1), 3, GrowthPlacement.Top, 1)).Message);
    }
}
