// Small BERT models and deterministic masked-language-model minibatches (with padding and unlabelled positions) for the training tests.
using L2L.Model.Bert;
using L2L.Model.Data;
using L2L.Model.Device;

namespace L2L.Training.Tests;

internal static class BertHarness
{
    /// <summary>Vocabulary 36: ids 0-31 are text, 32 pads, 33 is [MASK]; 2 heads of 8 channels.</summary>
    public static BertConfig Tiny(int layers = 2) => new(VocabSize: 36, HiddenSize: 16, Layers: layers, Heads: 2, IntermediateSize: 32,
        MaxPositions: 16, TypeVocabSize: 2, PadTokenId: 32, MaskTokenId: 33);

    public static TrainOptions Options(BertConfig config, ExecutorKind executor, StashPlacement stash = StashPlacement.Device,
        L2L.Training.Optim.OptimizerKind optimizer = L2L.Training.Optim.OptimizerKind.AdamW, int batch = 4, int microBatches = 2, int seq = 8, long steps = 3) =>
        TrainingHarness.Options(TrainingHarness.Tiny(), executor, stash, optimizer, batch, microBatches, seq, steps) with { Config = config };

    public static (double[] Losses, float[][] Weights, IReadOnlyList<StepMetrics> Metrics) Run(L2L.Backends.Backend backend, TrainOptions options,
        float[][]? init = null, L2L.Model.TrainingState? resume = null)
    {
        using var trainer = new Trainer(backend, options, new MaskedBatches((BertConfig)options.Config, options.Batch, options.SeqLen), init, resume);
        var metrics = trainer.Run(cancel: Xunit.TestContext.Current.CancellationToken);
        return (metrics.Select(m => m.Loss).ToArray(), trainer.Weights(), metrics);
    }
}

/// <summary>
/// Step s's minibatch, a pure function of (s, row, position): text ids from the synthetic corpus, every
/// odd row padded after a random length, about 20% of the non-pad positions labelled (most replaced by [MASK]).
/// </summary>
internal sealed class MaskedBatches(BertConfig config, int batch, int seqLen) : IBatchSource
{
    private readonly SyntheticCorpus _corpus = new(32, 1 << 14, seed: 7);

    public int Batch => batch;
    public int SeqLen => seqLen;

    public void Fill(long step, Span<int> inputs, Span<int> targets)
    {
        var window = new int[seqLen];
        for (var b = 0; b < batch; b++)
        {
            _corpus.Read((step * batch + b) * seqLen, window);
            var length = b % 2 == 1 ? 1 + (int)(Hash(step, b, -1) % (ulong)seqLen) : seqLen;
            for (var t = 0; t < seqLen; t++)
            {
                var i = b * seqLen + t;
                var h = Hash(step, b, t);
                if (t >= length)
                {
                    inputs[i] = config.PadTokenId;
                    targets[i] = MicroBatchInputs.IgnoreIndex;
                }
                else if (h % 5 == 0)
                {
                    inputs[i] = (h >> 8) % 4 == 0 ? window[t] : config.MaskTokenId;
                    targets[i] = window[t];
                }
                else
                {
                    inputs[i] = window[t];
                    targets[i] = MicroBatchInputs.IgnoreIndex;
                }
            }
        }
    }

    private static ulong Hash(long step, int b, int t)
    {
        var z = (ulong)step * 0x9E3779B97F4A7C15UL ^ (ulong)(b + 17) * 0xBF58476D1CE4E5B9UL ^ (ulong)(t + 1031) * 0x94D049BB133111EBUL;
        z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9UL;
        z = (z ^ (z >> 27)) * 0x94D049BB133111EBUL;
        return z ^ (z >> 31);
    }
}
