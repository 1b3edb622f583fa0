// The param server decides what runs: layer drop (stochastic depth) and frozen layers, in both executors.
using L2L.Backends;
using L2L.Model;
using L2L.TestSupport;
using L2L.Training.Optim;
using L2L.Training.Update;
using Xunit;

namespace L2L.Training.Tests;

public sealed class DynamicArchitectureTests(BackendFixture fixture)
{
    private const double Atol = 1e-5, Rtol = 1e-4; // as RelayEquivalenceTests

    private static TrainOptions Options(ExecutorKind executor, StashPlacement stash = StashPlacement.Device, float layerDrop = 0f,
        string? freeze = null, long steps = 6) =>
        TrainingHarness.Options(TrainingHarness.Tiny(4), executor, stash, OptimizerKind.AdamW, steps: steps) with { LayerDrop = layerDrop, Freeze = freeze };

    [Fact]
    public void LayerDropRelayMatchesConventionalForTheSamePattern()
    {
        var backend = fixture.Get(DeviceKind.Cpu);
        var options = Options(ExecutorKind.Relay, layerDrop: 0.4f);
        var layout = new ModelLayout(options.Config);
        var selection = options.Selection(layout);
        var device = TrainingHarness.Run(backend, options);
        var host = TrainingHarness.Run(backend, options with { Stash = StashPlacement.Host });
        var conventional = TrainingHarness.Run(backend, options with { Executor = ExecutorKind.Conventional });
        for (var step = 0; step < options.Steps; step++)
        {
            var expected = selection.ActiveBlocks(step).Length;
            Assert.Equal(expected, device.Metrics[step].BlocksRun);
            Assert.Equal(expected, conventional.Metrics[step].BlocksRun);
        }
        Assert.Contains(device.Metrics, m => m.BlocksRun < 4);
        TensorAssert.Close(conventional.Losses, device.Losses, Atol, Rtol, "losses");
        var reference = TestData.ToDouble(TrainingHarness.Flatten(conventional.Weights));
        TensorAssert.Close(reference, TrainingHarness.Flatten(device.Weights), Atol, Rtol, "relay (device stash)");
        TensorAssert.Close(reference, TrainingHarness.Flatten(host.Weights), Atol, Rtol, "relay (host stash)");
        TensorAssert.Equal(TrainingHarness.Flatten(device.Weights), TrainingHarness.Flatten(host.Weights), "device vs host stash");
        // The same seed gives the same pattern; the drop changes training.
        var full = TrainingHarness.Run(backend, options with { LayerDrop = 0f });
        Assert.NotEqual(full.Losses, device.Losses);
    }

    [Fact]
    public void ADroppedBlockSavesExactlyItsBusBytesAndKeepsItsState()
    {
        var backend = fixture.Get(DeviceKind.Cpu);
        var options = Options(ExecutorKind.Relay, layerDrop: 0.4f);
        var layout = new ModelLayout(options.Config);
        var selection = options.Selection(layout);
        var blockBytes = sizeof(float) * layout.Blocks[0].Length;
        var full = TrainingHarness.Run(backend, options with { LayerDrop = 0f });
        using var trainer = new Trainer(backend, options, TrainingHarness.Corpus());
        var compared = 0;
        for (var step = 0; step < options.Steps; step++)
        {
            var before = trainer.Weights();
            var stateBefore = trainer.State();
            var m = trainer.Step();
            var active = selection.ActiveBlocks(step);
            // Each block that runs is fetched for forward, fetched again for backward (except the top two, still in their
            // slots) and sends its gradients; a dropped block does none of these. So with at least two blocks running
            // the step moves exactly 3 block transfers less per dropped block (and one gradient sum of squares less, counted as io).
            if (active.Length >= 2)
            {
                var dropped = 4 - active.Length;
                Assert.Equal(full.Metrics[step].BusBytesByKind.Weights - 2L * blockBytes * dropped, m.BusBytesByKind.Weights);
                Assert.Equal(full.Metrics[step].BusBytesByKind.Grads - blockBytes * dropped, m.BusBytesByKind.Grads);
                Assert.Equal(full.Metrics[step].BusBytesByKind.Io - sizeof(float) * dropped, m.BusBytesByKind.Io);
                compared++;
            }
            var after = trainer.Weights();
            var stateAfter = trainer.State();
            foreach (var l in Enumerable.Range(0, 4).Except(active))
            {
                var i = layout.Blocks[l].Index;
                Assert.Equal(before[i], after[i]);
                Assert.Equal(stateBefore.LayerStates[i], stateAfter.LayerStates[i]);
            }
            foreach (var l in active)
                Assert.NotEqual(before[layout.Blocks[l].Index], after[layout.Blocks[l].Index]);
        }
        Assert.True(compared > 0);
        Assert.Contains(Enumerable.Range(0, (int)options.Steps), s => selection.ActiveBlocks(s).Length is >= 2 and < 4);
        // Each block counts its own AdamW steps (PyTorch's per-parameter step): a checkpoint records them.
        var counts = trainer.State().Metadata["layer_updates"].Split(',').Select(long.Parse).ToArray();
        for (var l = 0; l < 4; l++)
        {
            var runs = Enumerable.Range(0, (int)options.Steps).Count(s => selection.ActiveBlocks(s).Contains(l));
            Assert.Equal(runs, counts[layout.Blocks[l].Index]);
        }
    }

    [Theory]
    [InlineData(ExecutorKind.Relay, StashPlacement.Device)]
    [InlineData(ExecutorKind.Relay, StashPlacement.Host)]
    [InlineData(ExecutorKind.Conventional, StashPlacement.Device)]
    public void FrozenLayersStayBitIdenticalAndBackwardStopsBelowTheLowestTrainable(ExecutorKind executor, StashPlacement stash)
    {
        var backend = fixture.Get(DeviceKind.Cpu);
        var options = Options(executor, stash, freeze: "embedding,0", steps: 3);
        var layout = new ModelLayout(options.Config);
        var initial = Models.Initialize(layout, options.Seed);
        var frozen = TrainingHarness.Run(backend, options);
        var free = TrainingHarness.Run(backend, options with { Freeze = null });
        foreach (var layer in layout.Layers)
        {
            if (layer.Index == layout.Embedding.Index || layer.Index == layout.Blocks[0].Index)
                Assert.Equal(initial[layer.Index], frozen.Weights[layer.Index]);
            else
                Assert.NotEqual(initial[layer.Index], frozen.Weights[layer.Index]);
        }
        // Backward runs blocks 3, 2, 1 only (no block 0, no embedding) instead of 4 blocks and the embedding.
        Assert.All(frozen.Metrics, m => Assert.Equal(3, m.BackwardLayers));
        Assert.All(free.Metrics, m => Assert.Equal(5, m.BackwardLayers));
        if (executor == ExecutorKind.Relay && stash == StashPlacement.Device)
        {
            // Block 0 is neither fetched again for backward nor sends gradients: two block transfers less per step (and
            // neither block 0's nor the embedding's sum of squares comes back; io counts those, and the embedding backward's inputs).
            var blockBytes = sizeof(float) * layout.Blocks[0].Length;
            for (var i = 0; i < frozen.Metrics.Count; i++)
            {
                Assert.Equal(free.Metrics[i].BusBytesByKind.Weights - blockBytes, frozen.Metrics[i].BusBytesByKind.Weights);
                Assert.Equal(free.Metrics[i].BusBytesByKind.Grads - blockBytes, frozen.Metrics[i].BusBytesByKind.Grads);
            }
        }
    }

    [Fact]
    public void FrozenRelayMatchesConventional()
    {
        var backend = fixture.Get(DeviceKind.Cpu);
        // A frozen block above trainable ones passes gradients through but is not updated.
        var options = Options(ExecutorKind.Relay, freeze: "2,head", steps: 3);
        var relay = TrainingHarness.Run(backend, options);
        var conventional = TrainingHarness.Run(backend, options with { Executor = ExecutorKind.Conventional });
        TensorAssert.Close(TestData.ToDouble(TrainingHarness.Flatten(conventional.Weights)), TrainingHarness.Flatten(relay.Weights), Atol, Rtol, "weights");
        var layout = new ModelLayout(options.Config);
        var initial = Models.Initialize(layout, options.Seed);
        Assert.Equal(initial[layout.Blocks[2].Index], relay.Weights[layout.Blocks[2].Index]);
        Assert.Equal(initial[layout.Head.Index], relay.Weights[layout.Head.Index]);
        Assert.NotEqual(initial[layout.Blocks[1].Index], relay.Weights[layout.Blocks[1].Index]);
    }

    [Fact]
    public void FreezeSpecsParseAndBadOnesAreRefused()
    {
        var layout = new ModelLayout(TrainingHarness.Tiny(4));
        Assert.Equal([layout.Embedding.Index, layout.Blocks[0].Index, layout.Blocks[1].Index, layout.Blocks[2].Index],
            LayerSelection.ParseFreeze("embedding, 0-2", layout));
        Assert.Equal([layout.Blocks[3].Index, layout.Head.Index], LayerSelection.ParseFreeze("head,3", layout));
        foreach (var bad in new[] { "4", "2-1", "x", "0-9", "-1" })
            Assert.Contains("--freeze", Assert.Throws<ArgumentException>(() => LayerSelection.ParseFreeze(bad, layout)).Message);
        Assert.Contains("every layer", Assert.Throws<ArgumentException>((Options(ExecutorKind.Relay) with { Freeze = "embedding,0-3,head" }).Validate).Message);
        Assert.Throws<ArgumentException>((Options(ExecutorKind.Relay) with { LayerDrop = 1f }).Validate);
    }
}
