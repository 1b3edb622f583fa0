// Validation during training: val_loss equals the evaluator's loss on the same weights, file and batches.
using L2L.Backends;
using L2L.Model;
using L2L.Model.Data;
using L2L.Model.Tokenizers;
using L2L.TestSupport;
using Xunit;

namespace L2L.Training.Tests;

public sealed class ValidationTests(BackendFixture fixture)
{
    [Theory]
    [InlineData(ExecutorKind.Relay)]
    [InlineData(ExecutorKind.Conventional)]
    public void ValLossEqualsEvaluatorOnTheSameFileAndBatches(ExecutorKind executor)
    {
        var backend = fixture.Get(DeviceKind.Cpu);
        var config = TrainingHarness.Tiny();
        var options = TrainingHarness.Options(config, executor, steps: 5);
        var validation = new SyntheticCorpus(config.VocabSize, 4096, seed: 99);
        using var trainer = new Trainer(backend, options, TrainingHarness.Corpus(config.VocabSize));
        trainer.EnableValidation(validation, every: 2, batches: 3);
        var metrics = trainer.Run(cancel: TestContext.Current.CancellationToken);

        Assert.Equal([null, null], new[] { metrics[0].ValLoss, metrics[2].ValLoss });
        Assert.NotNull(metrics[1].ValLoss);
        Assert.NotNull(metrics[3].ValLoss);
        var last = Assert.IsType<double>(metrics[4].ValLoss); // the final step always validates
        Assert.Contains("\"val_loss\"", Trainer.ToJson(metrics[4]));
        Assert.DoesNotContain("val_loss", Trainer.ToJson(metrics[0]));
        Assert.NotEqual(metrics[1].ValLoss, metrics[3].ValLoss);

        // What `l2l eval` computes on a checkpoint of the final weights.
        var weights = trainer.Weights();
        var layout = new ModelLayout(config);
        using (var perMicroBatch = new Evaluator(backend, layout, weights, options.MicroBatchSize, options.SeqLen))
            Assert.Equal(last, perMicroBatch.Evaluate(validation, 3 * options.MicroBatches).Loss);
        using (var perBatch = new Evaluator(backend, layout, weights, options.Batch, options.SeqLen))
            Assert.Equal(last, perBatch.Evaluate(validation, 3).Loss, 1e-6);
    }

    [Fact]
    public void CheckpointsCarryTheDatasTokenizer()
    {
        var backend = fixture.Get(DeviceKind.Cpu);
        var config = TrainingHarness.Tiny();
        var root = Path.Combine(Path.GetTempPath(), "l2l-training-tests", Guid.NewGuid().ToString("N"));
        try
        {
            var data = Path.Combine(root, "data");
            Directory.CreateDirectory(data);
            TextTokenizers.WriteRecord(data, BpeTextTokenizer.Gpt2());
            using var trainer = new Trainer(backend, TrainingHarness.Options(config, ExecutorKind.Relay, steps: 1), TrainingHarness.Corpus(config.VocabSize))
            {
                TokenizerDirectory = data,
            };
            trainer.Run(cancel: TestContext.Current.CancellationToken);
            var checkpoint = Path.Combine(root, "ck");
            trainer.Save(checkpoint);
            trainer.Save(checkpoint); // a second save replaces the directory and must keep the record
            Assert.Equal("gpt2", TextTokenizers.FromDirectory(checkpoint)!.Name);
        }
        finally
        {
            if (Directory.Exists(root)) Directory.Delete(root, recursive: true);
        }
    }

    [Fact]
    public void BadValidationSettingsAreRefused()
    {
        var backend = fixture.Get(DeviceKind.Cpu);
        var config = TrainingHarness.Tiny();
        using var trainer = new Trainer(backend, TrainingHarness.Options(config, ExecutorKind.Relay), TrainingHarness.Corpus(config.VocabSize));
        Assert.Contains("--val-every", Assert.Throws<ArgumentException>(() => trainer.EnableValidation(TrainingHarness.Corpus(), 0, 1)).Message);
        Assert.Contains("--val-batches", Assert.Throws<ArgumentException>(() => trainer.EnableValidation(TrainingHarness.Corpus(), 1, 0)).Message);
        Assert.Contains("vocabulary", Assert.Throws<ArgumentException>(() => trainer.EnableValidation(new SyntheticCorpus(64, 1024), 1, 1)).Message);
    }
}
