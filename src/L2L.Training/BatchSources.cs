// Chooses how a run's minibatches are cut from its data, by the model's training objective.
using L2L.Model;
using L2L.Model.Bert;
using L2L.Model.Data;

namespace L2L.Training;

/// <summary>The minibatch source for a run: shifted windows for a causal model, masked windows for a masked-language model.</summary>
public static class BatchSources
{
    /// <summary>The source of <paramref name="options"/>' minibatches from <paramref name="data"/> (and, for a masked-language model, <paramref name="labels"/>).</summary>
    /// <exception cref="ArgumentException">Labels were given for a causal model.</exception>
    public static IBatchSource Create(TrainOptions options, ITokenSource data, ITokenSource? labels = null)
    {
        ArgumentNullException.ThrowIfNull(options);
        ArgumentNullException.ThrowIfNull(data);
        switch (options.Config.Objective)
        {
            case TrainingObjective.CausalLanguageModel:
                if (labels is not null)
                    throw new ArgumentException($"--labels is for masked-language models; a {options.Config.ModelType} model's targets are its next tokens.");
                return new BatchLoader(data, options.Batch, options.SeqLen, options.Shuffle, options.Seed);
            case TrainingObjective.MaskedLanguageModel when options.Config is BertConfig bert:
                return new MaskedBatches(MlmBatchLoader.For(bert, data, labels, options.Batch, options.SeqLen, options.Shuffle, options.Seed));
            default:
                throw new NotSupportedException($"No batch source for a {options.Config.ModelType} model's objective {options.Config.Objective}.");
        }
    }

    /// <summary>Evaluation batches: batch i is training step i's minibatch, in order, masked as training masks with <paramref name="seed"/>.</summary>
    public static IBatchSource ForEvaluation(IModelConfig config, ITokenSource data, ITokenSource? labels, int batch, int seqLen, int seed)
    {
        var options = new TrainOptions { Config = config, Batch = batch, MicroBatches = 1, SeqLen = seqLen, Seed = seed };
        return Create(options, data, labels);
    }

    private sealed class MaskedBatches(MlmBatchLoader loader) : IBatchSource
    {
        public int Batch => loader.Batch;
        public int SeqLen => loader.SeqLen;
        public void Fill(long step, Span<int> inputs, Span<int> targets) => loader.Fill(step, inputs, targets);
    }
}
