"""Facts about NIH ChestX-ray14 that every stage shares (sources: REFERENCE.md section 3).

    from dataprep.chestxray14.facts import CLASSES, ARCHIVES
    CLASSES[13]            # 'Hernia'
    ARCHIVES[0].name       # 'images_01.tar.gz'
"""
import collections

# Class order of CheXNet and its reimplementations: label vectors use it.
CLASSES = (
    "Atelectasis", "Cardiomegaly", "Effusion", "Infiltration", "Mass", "Nodule", "Pneumonia",
    "Pneumothorax", "Consolidation", "Edema", "Emphysema", "Fibrosis", "Pleural_Thickening",
    "Hernia",
)
NO_FINDING = "No Finding"

CSV_NAME = "Data_Entry_2017.csv"
TRAIN_VAL_LIST = "train_val_list.txt"
TEST_LIST = "test_list.txt"
CSV_HEADER = ("Image Index,Finding Labels,Follow-up #,Patient ID,Patient Age,Patient Gender,"
              "View Position,OriginalImage[Width,Height],OriginalImagePixelSpacing[x,y]")
CSV_FIELDS_PER_ROW = 11  # the two bracketed columns hold two values each

Archive = collections.namedtuple("Archive", "name url sha256 corroborated")

_BOX = "https://nihcc.box.com/shared/static/{}.gz"
_IDS_AND_SHA256 = (
    ("vfk49d74nhbxq3nqjg0900w5nvkorp5c", "fd8e3542db6351ae9377779033f5d5c5f32fe50eb0830b519fbf1a7e791354b1"),
    ("i28rlmbvmfjbl8p2n3ril0pptcmcu9d1", "c849cfa5504b8cffb301952bf93d53d3d39d7d931bc88bb70427b4a67de0740a"),
    ("f1t00wrtdk94satdfb9olcolqx20z2jp", "6a90a979850545e30ed3e9ba96de2f063db13aa2a3c22363820d3f70d8c882c8"),
    ("0aowwzs5lhjrceb3qp67ahp0rd1l1etg", "1ca953ec37fe9c132ec49743f9651b707884c6c76e6e3a33853940c13372a385"),
    ("v5e3goj22zr6h8tzualxfsqlqaygfbsn", "a058c365478454dc7395ee2897c2b63a3bf108739b857046838859227e42e743"),
    ("asi7ikud9jwnkrnkj99jnpfkjdes7l6l", "9b00987d39e4c9e4ab18b7426db82197c043dacec5a827141446c3900d39d5dd"),
    ("jn1b4mw4n6lnh74ovmcjb8y48h8xj07n", "7868b43798cf1bc9ae98d142644864b056e64edda3be12f7504f16485ac382ff"),
    ("tvpxmn7qyrgl0w8wfh9kqfjskv6nmm1j", "823088934d0ea57b4a7384446560bcdb825e712932b69e8541a84acee10af447"),
    ("upyy3ml7qdumlgk2rfcvlb9k6gvqq2pj", "bdd5bfe76323b630f5f83a013a0f2f100d1b03fdaea25240844e8763c1e40a51"),
    ("l6nilvfa9cg3s28tqv1qc1olm3gnz54p", "8f18699d3baad03cdf8946220a95e8d2bab555dc8e4be99e13bc0366a72aba1c"),
    ("hhq8fkdgvcari67vfhs7ppg2w6ni4jze", "7e7d190f71b5b792c495acb2eebbbf0563a8c528adb23e9335ec3b79cb5b486f"),
    ("ioqwiy20ihqwyr8pf4c24eazhh281pbu", "7316ce5f4d5e0154730e592cc2b45b48a2bee8457f6339d36c2ca55ed6e60b26"),
)
# Only the first two checksums were corroborated by a second public source.
ARCHIVES = tuple(Archive(f"images_{i + 1:02d}.tar.gz", _BOX.format(box_id), sha, i < 2)
                 for i, (box_id, sha) in enumerate(_IDS_AND_SHA256))

# Images carrying each label in the real set (of 112,120; 60,361 are No Finding).
REAL_COUNTS = {
    "Atelectasis": 11559, "Cardiomegaly": 2776, "Effusion": 13317, "Infiltration": 19894,
    "Mass": 5782, "Nodule": 6331, "Pneumonia": 1431, "Pneumothorax": 5302,
    "Consolidation": 4667, "Edema": 2303, "Emphysema": 2516, "Fibrosis": 1686,
    "Pleural_Thickening": 3385, "Hernia": 227,
}
REAL_NO_FINDING = 60361
REAL_IMAGE_COUNT = 112_120
REAL_IMAGE_SIZE = 1024


def patient_in_name(image_name):
    """'00000013_005.png' -> '00000013': the patient NIH's names start with; None for other names."""
    head, sep, _ = image_name.partition("_")
    return head if sep and len(head) == 8 and head.isdigit() else None
